//! Tests of `view` through the engine.

use std::time::Duration;

use super::*;
use crate::ingest::{json, Engine, EngineConfig};

fn body(points: std::ops::Range<usize>) -> String {
    let msgs: Vec<String> = points
        .map(|i| format!(r#"{{"time":{i},"metric":"m","tags":{{"i":"{i}"}},"value":{i}}}"#))
        .collect();
    format!("[{}]", msgs.join(","))
}

/// Reads everything from `from` in pages of `max_bytes`: the values seen
/// and the number of pages.
fn read_all(e: &Engine, mut from: Position, max_bytes: usize) -> (Vec<u64>, usize) {
    let tail = Position::from(e.log().next_offset());
    let (mut values, mut pages) = (Vec::new(), 0);
    while from < tail {
        let page = e.read_json(from, max_bytes).unwrap();
        assert!(page.next > from, "a page always moves forward");
        for m in &page.messages {
            let v: serde_json::Value = serde_json::from_slice(m).unwrap();
            values.push(v["value"].as_f64().unwrap() as u64);
        }
        from = page.next;
        pages += 1;
    }
    (values, pages)
}

#[tokio::test]
async fn pages_end_inside_large_records_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.buffer.flush_interval = Duration::from_secs(3600);
    let e = Engine::open(cfg).await.unwrap();
    // Three records: 3 points, 40,000 points (cached when paged), 5.
    for range in [0..3, 3..40_003, 40_003..40_008] {
        let text = body(range);
        e.write_with(|cat| Ok(json::parse(text.as_bytes(), false, cat)?))
            .await
            .unwrap();
    }
    let want: Vec<u64> = (0..40_008).collect();

    // One message is about 80 bytes: 64 KiB pages split the big record.
    let (values, pages) = read_all(&e, Position::default(), 64 << 10);
    assert_eq!(values, want);
    assert!(pages > 40, "{pages} pages");
    // A budget of one byte still moves one point at a time.
    let (values, pages) = read_all(&e, Offset(2).into(), 1);
    assert_eq!((values.len(), pages), (5, 5));
    // Unlimited: whole records, boundaries only.
    let page = e.read_json(Position::default(), usize::MAX).unwrap();
    assert_eq!(page.messages.len(), 40_008);
    assert_eq!(page.next, Offset(3).into());

    // Resuming inside a record that is not cached reads it again.
    e.log_view().clear_cache();
    let inside = Position {
        record: Offset(1),
        within: 39_999,
    };
    let (values, _) = read_all(&e, inside, 64 << 10);
    assert_eq!(values, want[40_002..]);

    // Positions this server never handed out are refused.
    for (record, within) in [(1, 40_000), (0, 3), (3, 1)] {
        let bad = Position {
            record: Offset(record),
            within,
        };
        let err = e.read_json(bad, 1 << 20).unwrap_err();
        assert!(matches!(err, ViewError::NotMinted { .. }), "{bad}: {err}");
    }
    e.shutdown().await.unwrap();
}
