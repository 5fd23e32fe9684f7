//! Write a batch with DoPut, then query it with Flight SQL.
//!
//! ```sh
//! cargo run -p streamdb-client --example write_and_query -- http://127.0.0.1:8080
//! ```

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use streamdb_client::Client;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let mut client = Client::connect(&url).await?;

    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("metric", DataType::Utf8, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let t0 = 1_705_276_800_000_000; // 2024-01-15T00:00:00Z
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(
                TimestampMicrosecondArray::from(vec![t0, t0 + 1_000_000, t0 + 2_000_000])
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec!["cpu_usage"; 3])),
            Arc::new(StringArray::from(vec!["web-1", "web-2", "web-1"])),
            Arc::new(Float64Array::from(vec![0.5, 0.7, 0.9])),
        ],
    )?;
    let written = client.write(vec![batch]).await?;
    println!(
        "wrote {} rows (offset {})",
        written.rows,
        written.last_offset.unwrap_or_default()
    );

    let (_, batches) = client
        .query(
            "SELECT tags['host'] AS host, avg(value) AS avg_cpu FROM metrics GROUP BY 1 ORDER BY 1",
        )
        .await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(())
}
