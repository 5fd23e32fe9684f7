//! A continuous query: print the snapshot, then each update, for a while.
//!
//! ```sh
//! cargo run -p streamdb-client --example subscribe -- http://127.0.0.1:8080 10
//! ```

use std::time::Duration;

use streamdb_client::Client;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let mut client = Client::connect(&url).await?;
    let mut sub = client
        .subscribe("SELECT tags['host'] AS host, count(*) AS points, avg(value) AS avg_value FROM metrics GROUP BY 1")
        .await?;
    println!(
        "columns: {:?}",
        sub.schema
            .fields()
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
    );
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(deadline);
    loop {
        let update = tokio::select! {
            u = sub.next() => u,
            _ = &mut deadline => break,
        };
        let Some(update) = update else { break };
        let update = update?;
        match &update.batch {
            Some(batch) => println!(
                "{} at {}:\n{}",
                update.kind,
                update.offset,
                arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))?
            ),
            None => println!("{} at {}", update.kind, update.offset),
        }
    }
    Ok(())
}
