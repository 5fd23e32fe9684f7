//! `streamdb repair` end to end: the binary on a data directory whose
//! metrics log has a damaged record followed by valid ones.

use std::sync::Arc;

use streamdb::stream::{Log, LogConfig, Offset};

#[tokio::test]
async fn repair_prints_the_lost_offsets_and_keeps_the_damaged_bytes() {
    let data = tempfile::tempdir().unwrap();
    let log_dir = data.path().join("stream").join("metrics");
    {
        let log: Log<()> = Log::open(LogConfig::new(&log_dir), Arc::new(())).unwrap();
        for i in 0..4u8 {
            assert_eq!(log.append(vec![i; 40], ()).await.unwrap(), Offset(i as u64));
        }
    }
    // Flip a byte inside record 1's payload (header 28, frames of 56).
    let seg = log_dir.join("000001.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[28 + 56 + 30] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamdb"))
        .args(["repair", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The payloads are not metrics records, so 0, 2 and 3 do not decode;
    // 1 is damaged. Every one is named, none is deleted.
    assert!(stdout.contains("lost offsets 1 (1 record(s))"), "{stdout}");
    for i in [0, 2, 3] {
        assert!(
            stdout.contains(&format!(
                "offset {i}: checksum holds but the record does not decode"
            )),
            "{stdout}"
        );
    }
    let aside = log_dir.join("000001.log.damaged-84-140");
    assert_eq!(std::fs::read(&aside).unwrap(), bytes[84..140], "{stdout}");
    assert!(stdout.contains("nothing was deleted"), "{stdout}");

    // A second run finds nothing left to do.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_streamdb"))
        .args(["repair", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to repair"));
}

#[tokio::test]
async fn repair_refuses_a_data_directory_a_server_holds() {
    let data = tempfile::tempdir().unwrap();
    let engine =
        streamdb::ingest::Engine::open(streamdb::ingest::EngineConfig::for_tests(data.path()))
            .await
            .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamdb"))
        .args(["repair", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by a running server"), "{stderr}");
    engine.shutdown().await.unwrap();
    drop(engine);
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_streamdb"))
        .args(["repair", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
