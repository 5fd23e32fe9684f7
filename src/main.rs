//! The `streamdb` binary: parses the command line and runs it.

use clap::Parser;

/// Stack of every runtime thread. Planning and evaluating SQL recurse once
/// per level of an expression tree; `query::complexity` bounds the depth,
/// and this leaves room for that bound even in debug builds (whose frames
/// are several times larger). It is address space: pages are only touched
/// by deep queries.
const THREAD_STACK_BYTES: usize = 32 << 20;

const SUBCOMMANDS: &[&str] = &[
    "start",
    "ingest",
    "query",
    "subscribe",
    "status",
    "repair",
    "completions",
];

fn main() {
    let subcommand = std::env::args()
        .skip(1)
        .find(|a| SUBCOMMANDS.contains(&a.as_str()));
    // SIGPIPE stays ignored, as Rust sets it, in every command: the
    // client's sockets are written with writev, which raises it when a
    // server or proxy drops the connection, and that must be an error the
    // retry loop sees, not death by signal. A closed standard output
    // (`streamdb status | head -1`) is the `StdoutClosed` error instead,
    // and ends the command quietly below.
    let cli = match streamdb::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit_on_usage_error(e, subcommand.as_deref()),
    };
    cli.init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()
        .expect("starting the async runtime");
    if let Err(e) = runtime.block_on(streamdb::cli::run(cli)) {
        if e.downcast_ref::<streamdb::cli::StdoutClosed>().is_some() {
            std::process::exit(0);
        }
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, without the repeats that arise
/// when a wrapper's message already quotes its source.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.strip_prefix("error: ").unwrap_or(&text);
        if out.ends_with(text) || out.contains(&format!("{text}:")) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

/// `--help` and `--version` print as clap renders them; a usage mistake is
/// one line (clap's message with its details, without the usage block) and
/// exit status 2.
fn exit_on_usage_error(e: clap::Error, subcommand: Option<&str>) -> ! {
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
    // clap's first paragraph is the message and its details (the missing
    // argument, the possible values); tips and usage follow a blank line.
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let help = match subcommand {
        Some(cmd) => format!("streamdb {cmd} --help"),
        None => "streamdb --help".to_string(),
    };
    eprintln!("{} (see '{help}')", message.join(" "));
    std::process::exit(2);
}
