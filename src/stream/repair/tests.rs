//! Damage generated at every byte of a log's newest (and a sealed)
//! segment: what recovery cuts, what it refuses, and what repair keeps.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::stream::{Log, LogConfig, Offset};

const N: u64 = 8;

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat(i as usize * 3)).into_bytes()
}

fn open(dir: &Path, segment_bytes: u64) -> Result<Log<()>, LogError> {
    let mut cfg = LogConfig::new(dir);
    cfg.segment_bytes = segment_bytes;
    Log::open(cfg, Arc::new(()))
}

/// A log holding records `0..N`, every one acknowledged (fsynced).
async fn written(dir: &Path, segment_bytes: u64) {
    let log = open(dir, segment_bytes).unwrap();
    for i in 0..N {
        assert_eq!(log.append(payload(i), ()).await.unwrap(), Offset(i));
    }
}

fn all_ok(_: &[u8]) -> Result<(), String> {
    Ok(())
}

/// Every record the log returns, by offset.
fn records(log: &Log<()>) -> Vec<(u64, Vec<u8>)> {
    log.read(Offset(0), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(o, p)| (o.0, p))
        .collect()
}

/// Copies `from` into a new directory with `damage` applied to `file`.
fn damaged_copy(from: &Path, file: &str, damage: impl Fn(&mut Vec<u8>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let path = dir.path().join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    damage(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
    dir
}

/// After repair: the log opens, every record not reported lost reads back
/// at its offset, the next append gets an offset never handed out, and
/// each set-aside file holds the damaged bytes.
async fn check_repaired(dir: &Path, segment_bytes: u64, what: &str) -> Vec<u64> {
    let before: Vec<Vec<u8>> = segment::list(dir)
        .unwrap()
        .iter()
        .map(|&id| std::fs::read(dir.join(segment::file_name(id))).unwrap())
        .collect();
    let done = repair_log(dir, &all_ok).unwrap();
    assert!(!done.is_empty(), "{what}: repair found nothing");
    let lost: Vec<u64> = done
        .iter()
        .flat_map(|r| r.lost.iter().cloned().flatten())
        .collect();
    for r in &done {
        for aside in &r.set_aside {
            let name = aside.file_name().unwrap().to_str().unwrap();
            let (_, span) = name.split_once(".damaged-").unwrap();
            let (a, b) = span.split_once('-').unwrap();
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            let seg: u64 = name[..6].parse().unwrap();
            let idx = segment::list(dir)
                .unwrap()
                .iter()
                .position(|&i| i == seg)
                .unwrap();
            assert_eq!(std::fs::read(aside).unwrap(), before[idx][a..b], "{what}");
        }
    }
    let log = open(dir, segment_bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want: Vec<(u64, Vec<u8>)> = (0..N)
        .filter(|i| !lost.contains(i))
        .map(|i| (i, payload(i)))
        .collect();
    assert_eq!(records(&log), want, "{what}: lost {lost:?}");
    assert_eq!(
        log.append(b"after".to_vec(), ()).await.unwrap(),
        Offset(N),
        "{what}"
    );
    // Repairing a repaired log changes nothing.
    drop(log);
    assert_eq!(repair_log(dir, &all_ok).unwrap(), vec![], "{what}");
    lost
}

/// `(start, end)` of each record's frame in a one-segment log.
fn frames(path: &Path) -> Vec<(u64, u64)> {
    segment::scan(path)
        .unwrap()
        .frames()
        .map(|f| (f.pos, f.end))
        .collect()
}

#[tokio::test]
async fn damage_in_the_newest_segment_is_cut_only_when_nothing_valid_follows() {
    let clean = tempfile::tempdir().unwrap();
    written(clean.path(), 1 << 20).await;
    let seg = "000001.log";
    let spans = frames(&clean.path().join(seg));
    let last = *spans.last().unwrap();
    type Damage = (&'static str, usize, fn(&mut Vec<u8>, usize));
    let kinds: [Damage; 2] = [
        ("flip a bit", 1, |b, p| b[p] ^= 0x10),
        ("zero 5 bytes", 5, |b, p| {
            let end = (p + 5).min(b.len());
            b[p..end].fill(0)
        }),
    ];
    let frame_of = |p: u64| spans.iter().position(|&(a, b)| (a..b).contains(&p));
    for (kind, width, damage) in kinds {
        for p in spans[0].0 as usize..last.1 as usize {
            let mut probe = std::fs::read(clean.path().join(seg)).unwrap();
            damage(&mut probe, p);
            if probe == std::fs::read(clean.path().join(seg)).unwrap() {
                continue; // zeroes over zeroes: no damage
            }
            let dir = damaged_copy(clean.path(), seg, |b| damage(b, p));
            let what = format!("{kind} at byte {p}");
            let k = frame_of(p as u64).unwrap();
            let hit_last = frame_of((p + width - 1).min(last.1 as usize - 1) as u64).unwrap();
            let opened = open(dir.path(), 1 << 20);
            if hit_last as u64 == N - 1 {
                // No valid frame after the damage: a torn tail, cut.
                let log = opened.unwrap_or_else(|e| panic!("{what}: {e}"));
                let want: Vec<_> = (0..k as u64).map(|i| (i, payload(i))).collect();
                assert_eq!(records(&log), want, "{what}");
                continue;
            }
            let err = opened.err().unwrap_or_else(|| panic!("{what}: opened"));
            let msg = err.to_string();
            let range = format!("bytes {}..", spans[k].0);
            for part in [seg, &range, &format!("offsets {k}"), "streamdb repair"] {
                assert!(msg.contains(part), "{what}: {part:?} not in {msg}");
            }
            assert!(msg.contains(&format!("to {}", N - 1)), "{what}: {msg}");
            let lost = check_repaired(dir.path(), 1 << 20, &what).await;
            assert!(
                lost.contains(&(k as u64)) && lost.len() <= 2,
                "{what}: {lost:?}"
            );
        }
    }
}

#[tokio::test]
async fn damage_at_the_end_of_a_sealed_segment_is_refused_and_repaired() {
    let clean = tempfile::tempdir().unwrap();
    // Each record fills a segment: segment k+1 holds offset k.
    written(clean.path(), 32).await;
    let seg = "000003.log";
    let (start, end) = frames(&clean.path().join(seg))[0];
    for p in start as usize..end as usize {
        let dir = damaged_copy(clean.path(), seg, |b| b[p] ^= 0x01);
        let what = format!("bit flip at byte {p} of {seg}");
        let err = open(dir.path(), 32)
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"));
        let msg = err.to_string();
        assert!(
            msg.contains(seg) && msg.contains("offsets 2"),
            "{what}: {msg}"
        );
        assert_eq!(
            check_repaired(dir.path(), 32, &what).await,
            vec![2],
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_record_that_does_not_decode_is_set_aside_and_its_offset_never_reused() {
    let clean = tempfile::tempdir().unwrap();
    written(clean.path(), 1 << 20).await;
    for bad in 0..N {
        let dir = damaged_copy(clean.path(), "000001.log", |_| {});
        let check = |p: &[u8]| {
            if p == payload(bad).as_slice() {
                Err("unknown record kind".to_string())
            } else {
                Ok(())
            }
        };
        let done = repair_log(dir.path(), &check).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].lost, vec![bad..bad + 1]);
        assert_eq!(
            done[0].undecodable,
            vec![(bad, "unknown record kind".to_string())]
        );
        let aside = std::fs::read(&done[0].set_aside[0]).unwrap();
        assert!(aside.ends_with(&payload(bad)), "the frame is kept aside");
        let log = open(dir.path(), 1 << 20).unwrap();
        let want: Vec<_> = (0..N)
            .filter(|&i| i != bad)
            .map(|i| (i, payload(i)))
            .collect();
        assert_eq!(records(&log), want);
        assert_eq!(log.append(b"next".to_vec(), ()).await.unwrap(), Offset(N));
        assert!(done[0]
            .describe()
            .iter()
            .any(|l| l.contains(&format!("lost offsets {bad} "))));
    }
}

#[tokio::test]
async fn a_version_1_segment_is_read_and_appends_go_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = segment::encode_header_v1(5);
    for i in 0..3 {
        segment::encode_record_v1(&mut bytes, &payload(i));
    }
    std::fs::write(dir.path().join("000001.log"), &bytes).unwrap();
    let log = open(dir.path(), 1 << 20).unwrap();
    let got: Vec<_> = records_from(&log, 5);
    assert_eq!(got, (0..3).map(|i| (5 + i, payload(i))).collect::<Vec<_>>());
    assert_eq!(log.append(b"new".to_vec(), ()).await.unwrap(), Offset(8));
    assert_eq!(log.stats().segments, 2);
}

fn records_from(log: &Log<()>, from: u64) -> Vec<(u64, Vec<u8>)> {
    log.read(Offset(from), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(o, p)| (o.0, p))
        .collect()
}
