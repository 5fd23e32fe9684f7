//! The `streamdb` binary: parses the command line and runs it.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = streamdb::cli::Cli::parse();
    cli.init_logging();
    if let Err(e) = streamdb::cli::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
