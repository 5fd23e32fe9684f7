use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;

use super::*;

#[derive(Default)]
struct Recorder(Mutex<Vec<(Offset, u32)>>);

impl DurableSink<u32> for Recorder {
    fn on_durable(&self, offset: Offset, attachment: u32) {
        self.0.lock().push((offset, attachment));
    }
}

fn open(dir: &Path, segment_bytes: u64) -> (Log<u32>, Arc<Recorder>) {
    let sink = Arc::new(Recorder::default());
    let mut cfg = LogConfig::new(dir);
    cfg.segment_bytes = segment_bytes;
    (Log::open(cfg, sink.clone()).unwrap(), sink)
}

#[tokio::test]
async fn appends_are_read_back_in_order_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, sink) = open(dir.path(), 1 << 20);
        for i in 0..5u32 {
            let off = log
                .append(format!("rec-{i}").into_bytes(), i)
                .await
                .unwrap();
            assert_eq!(off, Offset(i as u64));
        }
        assert_eq!(
            sink.0
                .lock()
                .iter()
                .map(|(o, a)| (o.0, *a))
                .collect::<Vec<_>>(),
            (0..5).map(|i| (i as u64, i)).collect::<Vec<_>>()
        );
    }
    let (log, _) = open(dir.path(), 1 << 20);
    assert_eq!(log.next_offset(), Offset(5));
    let recs = log.read(Offset(2), usize::MAX).unwrap();
    let got: Vec<_> = recs
        .iter()
        .map(|(o, p)| (o.0, String::from_utf8(p.clone()).unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "rec-2".into()),
            (3, "rec-3".into()),
            (4, "rec-4".into())
        ]
    );
    assert_eq!(log.append(b"more".to_vec(), 9).await.unwrap(), Offset(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_contiguous_offsets_and_sink_sees_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, sink) = open(dir.path(), 1 << 14);
    let log = Arc::new(log);
    let tasks: Vec<_> = (0..8u32)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut offs = Vec::new();
                for i in 0..50u32 {
                    offs.push(
                        log.append(vec![w as u8; 100 + i as usize], w * 1000 + i)
                            .await
                            .unwrap(),
                    );
                }
                offs
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (0..400).map(Offset).collect::<Vec<_>>());
    let seen: Vec<u64> = sink.0.lock().iter().map(|(o, _)| o.0).collect();
    assert_eq!(
        seen,
        (0..400).collect::<Vec<_>>(),
        "sink must see records in offset order"
    );
    assert!(log.stats().segments > 1, "16 KiB segments must have rolled");
    // Every record reads back with the payload its writer sent.
    for (off, payload) in log.read(Offset(0), usize::MAX).unwrap() {
        let att = sink.0.lock()[off.0 as usize].1;
        assert_eq!(
            payload,
            vec![(att / 1000) as u8; 100 + (att % 1000) as usize]
        );
    }
}

#[tokio::test]
async fn torn_tail_is_cut_off_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = open(dir.path(), 1 << 20);
        log.append(b"kept".to_vec(), 0).await.unwrap();
    }
    // A crash in the middle of writing the second record.
    let path = dir.path().join("000001.log");
    let mut frame = Vec::new();
    let format = segment::scan(&path).unwrap().format;
    segment::encode_record(&mut frame, format, 1, b"never acknowledged");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&frame[..frame.len() - 3])
        .unwrap();

    let (log, _) = open(dir.path(), 1 << 20);
    assert_eq!(log.next_offset(), Offset(1));
    assert_eq!(log.append(b"after".to_vec(), 1).await.unwrap(), Offset(1));
    let got: Vec<Vec<u8>> = log
        .read(Offset(0), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(got, vec![b"kept".to_vec(), b"after".to_vec()]);
}

#[tokio::test]
async fn damage_in_a_sealed_segment_is_an_error_not_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = open(dir.path(), 64);
        for i in 0..4u32 {
            log.append(vec![7u8; 100], i).await.unwrap();
        }
        assert!(log.stats().segments >= 3);
    }
    let path = dir.path().join("000001.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let err = Log::<u32>::open(LogConfig::new(dir.path()), Arc::new(()))
        .err()
        .expect("must refuse");
    assert!(matches!(err, LogError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("000001.log"), "{err}");
    assert!(err.to_string().contains("streamdb repair"), "{err}");
}

#[tokio::test]
async fn remove_before_drops_only_fully_covered_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 64);
    for i in 0..6u32 {
        log.append(vec![1u8; 100], i).await.unwrap();
    }
    // One 100-byte record per segment: segment k holds offset k-1, the last
    // segment (active) holds offset 5.
    assert_eq!(log.stats().segments, 6);
    assert_eq!(log.remove_before(Offset(3), Retention::NONE).unwrap(), 3);
    assert_eq!(log.first_offset(), Offset(3));
    assert!(matches!(
        log.read(Offset(1), 10),
        Err(LogError::Truncated { .. })
    ));
    assert_eq!(log.read(Offset(3), usize::MAX).unwrap().len(), 3);
    // The active segment is never removed, even when fully covered.
    assert_eq!(log.remove_before(Offset(100), Retention::NONE).unwrap(), 2);
    assert_eq!(log.stats().segments, 1);
    drop(log);
    let (log, _) = open(dir.path(), 64);
    assert_eq!(
        (log.first_offset(), log.next_offset()),
        (Offset(5), Offset(6))
    );
}

#[tokio::test]
async fn retention_keeps_covered_segments_readable_up_to_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 64);
    for i in 0..6u32 {
        log.append(vec![1u8; 100], i).await.unwrap();
    }
    let segment_len = log.stats().bytes / 6;
    let keep = |segments: u64| Retention {
        age: std::time::Duration::from_secs(3600),
        bytes: segments * segment_len,
    };
    // Young segments within the byte budget stay, covered or not.
    assert_eq!(log.remove_before(Offset(5), keep(5)).unwrap(), 0);
    assert_eq!(log.read(Offset(0), usize::MAX).unwrap().len(), 6);
    // Over the budget, the oldest go first, down to the budget.
    assert_eq!(log.remove_before(Offset(5), keep(2)).unwrap(), 3);
    assert_eq!(log.first_offset(), Offset(3));
    // Never what the manifest does not cover, whatever the budget.
    assert_eq!(log.remove_before(Offset(4), keep(0)).unwrap(), 1);
    assert_eq!(log.first_offset(), Offset(4));
    // Age alone: a zero age drops every covered sealed segment.
    let aged = Retention {
        age: std::time::Duration::ZERO,
        bytes: u64::MAX,
    };
    assert_eq!(log.remove_before(Offset(6), aged).unwrap(), 1);
    assert_eq!(log.first_offset(), Offset(5));
}

#[tokio::test]
async fn reading_past_the_end_is_an_error_and_at_the_end_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 1 << 20);
    log.append(b"x".to_vec(), 0).await.unwrap();
    assert!(log.read(Offset(1), 10).unwrap().is_empty());
    assert!(matches!(
        log.read(Offset(2), 10),
        Err(LogError::BeyondEnd { .. })
    ));
}

#[tokio::test]
async fn a_covered_active_segment_is_sealed_so_it_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), 64 << 20);
    for i in 0..3u32 {
        log.append(vec![7u8; 600 << 10], i).await.unwrap();
    }
    // Not all covered: nothing happens.
    log.seal_covered(Offset(2)).await.unwrap();
    assert_eq!(log.stats().segments, 1);
    log.seal_covered(Offset(3)).await.unwrap();
    assert_eq!(log.stats().segments, 2);
    assert_eq!(log.remove_before(Offset(3), Retention::NONE).unwrap(), 1);
    assert_eq!(log.stats().segments, 1);
    // A fresh, empty active segment is not sealed again.
    log.seal_covered(Offset(3)).await.unwrap();
    assert_eq!(log.stats().segments, 1);
    assert_eq!(log.append(vec![1], 9).await.unwrap(), Offset(3));
    drop(log);
    let (log, _) = open(dir.path(), 64 << 20);
    assert_eq!(
        (log.first_offset(), log.next_offset()),
        (Offset(3), Offset(4))
    );
    assert_eq!(log.read(Offset(3), usize::MAX).unwrap()[0].1, vec![1]);
}
