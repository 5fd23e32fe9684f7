//! The `streamdb` binary: parses the command line and runs it.

use clap::Parser;

/// Stack of every runtime thread. Planning and evaluating SQL recurse once
/// per level of an expression tree; `query::complexity` bounds the depth,
/// and this leaves room for that bound even in debug builds (whose frames
/// are several times larger). It is address space: pages are only touched
/// by deep queries.
const THREAD_STACK_BYTES: usize = 32 << 20;

fn main() {
    let cli = streamdb::cli::Cli::parse();
    cli.init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()
        .expect("starting the async runtime");
    if let Err(e) = runtime.block_on(streamdb::cli::run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
