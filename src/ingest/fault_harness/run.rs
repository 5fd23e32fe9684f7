//! One seeded run: a node lives through the workload and its fault,
//! dies (or stops cleanly), has its files damaged as the fault says, and
//! starts again; then every acknowledged point must be readable exactly
//! once and no unacknowledged batch partly present, before and after one
//! more flush, maintenance pass and restart.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::plan::{choose, Family, Fault, Loss, Segment};
use super::workload::{send, settle, Ended, Node, Workload};
use crate::error::{ErrorKind, HasKind};
use crate::ingest::testing::contents;
use crate::ingest::Engine;
use crate::model::Verdict;
use crate::runtime::CrashPoints;
use crate::storage::faults::FaultyStore;
use crate::storage::PARTITION_MICROS;

/// What one run did and found.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub fault: Fault,
    /// False when the workload never reached what the fault needed (a
    /// crash point hit fewer times, a sealed segment never made, ...).
    pub fired: bool,
    /// The first thing found wrong.
    pub failure: Option<String>,
}

/// Runs seed `seed` with a fault from `families`, on a runtime of its own
/// (paused tokio time: the seed alone decides what happens).
pub fn run(seed: u64, families: &[Family]) -> Outcome {
    let ran = std::panic::catch_unwind(|| run_on_runtime(seed, families));
    ran.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        let mut rng = StdRng::seed_from_u64(seed);
        Outcome {
            seed,
            fault: choose(&mut rng, families),
            fired: true,
            failure: Some(format!("panicked: {why}")),
        }
    })
}

fn run_on_runtime(seed: u64, families: &[Family]) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(run_async(seed, families))
}

async fn run_async(seed: u64, families: &[Family]) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let fault = choose(&mut rng, families);
    let mut outcome = Outcome {
        seed,
        fault: fault.clone(),
        fired: false,
        failure: None,
    };
    let node = Node::new(&mut rng).expect("a temporary directory");
    let mut work = Workload::new(rng);
    match lives(&node, &fault, &mut work).await {
        Ok(fired) => outcome.fired = fired,
        Err((fired, why)) => {
            outcome.fired = fired;
            outcome.failure = Some(why);
        }
    }
    outcome
}

/// The node's lives; `Ok(fired)`, or what went wrong.
async fn lives(node: &Node, fault: &Fault, work: &mut Workload) -> Result<bool, (bool, String)> {
    let crash = match fault {
        Fault::Crash { point, nth, .. } => CrashPoints::arm(*point, *nth),
        _ => CrashPoints::default(),
    };
    let (cfg, store) = node.life(&crash);
    if let Fault::Store { prefix, nth, fault } = fault {
        store.inject(prefix, *nth, *fault);
    }
    let e = Engine::open(cfg)
        .await
        .map_err(|e| (false, format!("first open failed: {e}")))?;
    let ops = work.rng.random_range(10..40);
    let stopped = drive(&e, &store, &crash, fault, work, ops).await;
    let fired = match fault {
        Fault::Crash { .. } => crash.crashed().is_some(),
        Fault::Store { .. } => store.fired(),
        Fault::PowerLoss { .. } => true,
        Fault::BitFlip { .. } => false,
    };
    let stopped = stopped.map_err(|why| (fired, why))?;
    end_life(e, &store, stopped).await;
    let fired = match damage(node, fault, work) {
        Ok(flipped) => fired || flipped,
        Err(why) => return Err((fired, why)),
    };
    restart(node, fault, work)
        .await
        .map_err(|why| (fired, why))?;
    Ok(fired)
}

/// How the workload's life ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    /// A crash point, or the planned power loss: no shutdown.
    Died,
    /// The workload ran out: a clean shutdown, or a kill (`false`).
    Done { clean: bool },
}

/// Runs `ops` operations, or until the process dies. Only the fault may
/// make an operation fail, and only the one it hit.
async fn drive(
    e: &Arc<Engine>,
    store: &FaultyStore,
    crash: &CrashPoints,
    fault: &Fault,
    work: &mut Workload,
    ops: usize,
) -> Result<Stopped, String> {
    for n in 0..ops {
        if matches!(fault, Fault::PowerLoss { at, .. } if *at == n) {
            return Ok(Stopped::Died);
        }
        let fired_before = store.fired();
        let (op, ended) = work.step(e, store).await;
        match ended {
            Ended::Ok => {}
            Ended::Crashed => return Ok(Stopped::Died),
            // The log's writer thread crashed: the write hears "closed".
            Ended::Failed(_) if crash.crashed().is_some() => return Ok(Stopped::Died),
            Ended::Failed(why) => {
                let store_fault = matches!(fault, Fault::Store { .. });
                if !(store_fault && !fired_before && store.fired()) {
                    return Err(format!("operation {n} ({op}) failed: {why}"));
                }
            }
        }
    }
    if let Fault::BitFlip { .. } = fault {
        // Acknowledged records only the log holds, for the flip to hit.
        for _ in 0..work.rng.random_range(1..4) {
            if let Ended::Failed(why) = work.write(e, store).await {
                return Err(format!("a last write failed: {why}"));
            }
        }
        return Ok(Stopped::Done { clean: false });
    }
    Ok(Stopped::Done {
        clean: work.rng.random_bool(0.3),
    })
}

/// Ends the first life: a clean shutdown, or the process dies (its loops
/// stop without flushing, the engine is dropped).
async fn end_life(e: Arc<Engine>, store: &FaultyStore, stopped: Stopped) {
    if stopped == (Stopped::Done { clean: true }) {
        // A shutdown that fails (or reaches the armed crash point) leaves
        // the data in the log: still a way to stop; the restart checks it.
        let engine = e.clone();
        let _ = settle(store, async move { engine.shutdown().await }).await;
    }
    e.tasks().shutdown().await;
    drop(e);
    // The log's writer thread ends once its last handle is gone.
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Damages the files as the fault says; `Ok(true)` if a bit was flipped.
fn damage(node: &Node, fault: &Fault, work: &mut Workload) -> Result<bool, String> {
    let loss = match fault {
        Fault::Crash { loss, .. } => *loss,
        Fault::PowerLoss { loss, .. } => Some(*loss),
        Fault::BitFlip { segment } => return flip(node, *segment, &mut work.rng),
        Fault::Store { .. } => None,
    };
    let rng = &mut work.rng;
    let cut = match loss {
        None => return Ok(false),
        Some(Loss::Clean) => node.loss.cut(&mut |_, synced, _| synced),
        Some(Loss::Torn) => node
            .loss
            .cut(&mut |_, synced, written| rng.random_range(synced..=written)),
    };
    cut.map(|_| false)
        .map_err(|e| format!("the power loss failed: {e}"))
}

/// Flips one bit past the header of a segment; `Ok(false)` if there is no
/// such segment, or it holds no record.
fn flip(node: &Node, segment: Segment, rng: &mut StdRng) -> Result<bool, String> {
    let dir = node.log_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let path = match segment {
        Segment::Newest => files.last().cloned(),
        Segment::Sealed if files.len() > 1 => {
            Some(files[rng.random_range(0..files.len() - 1)].clone())
        }
        Segment::Sealed => None,
    };
    let Some(path) = path else { return Ok(false) };
    let mut bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
    let header = crate::stream::segment::HEADER_LEN as usize;
    // The last frame is left alone: a flip there cannot be told from a
    // torn write, which recovery may cut (the log's own tests cover that
    // case). Anywhere before it, valid frames follow the damage, so the
    // restart must refuse or keep every acknowledged record.
    let scanned = crate::stream::segment::scan_bytes(&bytes).map_err(|e| e.to_string())?;
    let Some(last) = scanned.frames().last() else {
        return Ok(false);
    };
    let end = last.pos as usize;
    if end <= header {
        return Ok(false);
    }
    let bit = rng.random_range(header * 8..end * 8);
    bytes[bit / 8] ^= 1 << (bit % 8);
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    Ok(true)
}

/// The second and third lives: open, retry the producer batches whose
/// answer was lost, check; flush, compact, collect, check; restart, check.
async fn restart(node: &Node, fault: &Fault, work: &mut Workload) -> Result<(), String> {
    let (cfg, store) = node.life(&CrashPoints::default());
    let e = match Engine::open(cfg.clone()).await {
        Ok(e) => e,
        // A damaged sealed segment is refused, naming the damage.
        Err(err) if matches!(fault, Fault::BitFlip { .. }) && err.kind() == ErrorKind::Corrupt => {
            return Ok(());
        }
        Err(err) => return Err(format!("restart refused: {err}")),
    };
    for retry in std::mem::take(&mut work.retries) {
        match send(&e, &store, &retry.batch, &retry.tuple).await {
            Ok(None) | Ok(Some(Verdict::Duplicate { .. })) => work.ledger.acked(retry.batch_no),
            Ok(Some(v)) => return Err(format!("a producer's retry after the restart: {v:?}")),
            Err(ended) => return Err(format!("a producer's retry after the restart: {ended:?}")),
        }
    }
    let check = |when: &'static str, held| {
        work.ledger
            .check(&held)
            .map_err(|why| format!("after the {when}: {why}"))
    };
    check("restart", contents(&e).await)?;
    e.flush()
        .await
        .map_err(|e| format!("flush after the restart: {e}"))?;
    tokio::time::advance(Duration::from_micros(PARTITION_MICROS as u64 * 2)).await;
    e.maintain()
        .await
        .map_err(|e| format!("maintenance after the restart: {e}"))?;
    tokio::time::advance(Duration::from_secs(120)).await;
    e.maintain()
        .await
        .map_err(|e| format!("maintenance after the restart: {e}"))?;
    check("flush and maintenance", contents(&e).await)?;
    e.shutdown()
        .await
        .map_err(|e| format!("shutdown after the restart: {e}"))?;
    drop(e);
    let e = Engine::open(cfg)
        .await
        .map_err(|e| format!("the second restart refused: {e}"))?;
    check("second restart", contents(&e).await)?;
    e.shutdown().await.map_err(|e| e.to_string())?;
    Ok(())
}
