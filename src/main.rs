//! The `streamdb` binary: parses the command line and runs it.

use clap::Parser;

/// Stack of every runtime thread. Planning and evaluating SQL recurse once
/// per level of an expression tree; `query::complexity` bounds the depth,
/// and this leaves room for that bound even in debug builds (whose frames
/// are several times larger). It is address space: pages are only touched
/// by deep queries.
const THREAD_STACK_BYTES: usize = 32 << 20;

fn main() {
    let cli = match streamdb::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit_on_usage_error(e),
    };
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

/// `--help` and `--version` print as clap renders them; a usage mistake is
/// one line (clap's first, without its usage block) and exit status 2.
fn exit_on_usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or("error: invalid arguments");
    eprintln!("{first} (see 'streamdb --help')");
    std::process::exit(2);
}
