//! What a run wrote, batch by batch, and the check every run ends with:
//! every acknowledged point readable exactly once, every unacknowledged
//! batch present whole (once) or not at all, nothing nobody wrote.
//!
//! Every point carries a value no other point of the run has, so a row
//! read back names its batch.

use std::collections::BTreeMap;

use crate::ingest::testing::Row;

/// Whether a batch's writer heard "written".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Acked,
    /// The write failed or the process died during it: the batch may be
    /// durable (whole) or not.
    Unknown,
}

#[derive(Debug)]
struct Batch {
    rows: Vec<Row>,
    answer: Answer,
}

/// The batches of one run, in write order.
#[derive(Debug, Default)]
pub struct Ledger {
    batches: Vec<Batch>,
}

impl Ledger {
    /// Records a batch of `rows` with its answer; returns its number.
    pub fn record(&mut self, rows: Vec<Row>, answer: Answer) -> usize {
        self.batches.push(Batch { rows, answer });
        self.batches.len() - 1
    }

    /// Batch `n` turned out acknowledged (a producer's retry was answered
    /// "written" or "duplicate").
    pub fn acked(&mut self, n: usize) {
        self.batches[n].answer = Answer::Acked;
    }

    /// Checks `held` (every stored row with its copies) against the
    /// ledger; the error says what is wrong, with a few examples.
    pub fn check(&self, held: &BTreeMap<Row, usize>) -> Result<(), String> {
        let twice: Vec<_> = held.iter().filter(|(_, n)| **n > 1).take(3).collect();
        if !twice.is_empty() {
            return Err(format!("rows held more than once: {twice:?}"));
        }
        let mut known = 0;
        for (n, b) in self.batches.iter().enumerate() {
            let present = b.rows.iter().filter(|r| held.contains_key(r)).count();
            known += present;
            match b.answer {
                Answer::Acked if present < b.rows.len() => {
                    return Err(format!(
                        "acknowledged batch {n} lost {} of its {} rows",
                        b.rows.len() - present,
                        b.rows.len()
                    ));
                }
                Answer::Unknown if present != 0 && present != b.rows.len() => {
                    return Err(format!(
                        "unacknowledged batch {n} is partly present: {present} of {} rows",
                        b.rows.len()
                    ));
                }
                _ => {}
            }
        }
        if known != held.len() {
            let rows: Vec<_> = self.batches.iter().flat_map(|b| &b.rows).collect();
            let foreign: Vec<_> = held.keys().filter(|r| !rows.contains(r)).take(3).collect();
            return Err(format!(
                "{} rows nobody wrote, e.g. {foreign:?}",
                held.len() - known
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_refuses_lost_partial_doubled_and_foreign_rows() {
        let mut ledger = Ledger::default();
        let acked: Vec<Row> = (0..4).map(|i| (1, i, i as u64)).collect();
        let unknown: Vec<Row> = (4..8).map(|i| (2, i, i as u64)).collect();
        ledger.record(acked.clone(), Answer::Acked);
        ledger.record(unknown.clone(), Answer::Unknown);
        let held = |rows: &[Row]| rows.iter().map(|r| (*r, 1)).collect::<BTreeMap<_, _>>();
        let all: Vec<Row> = acked.iter().chain(&unknown).copied().collect();
        assert_eq!(ledger.check(&held(&acked)), Ok(()));
        assert_eq!(ledger.check(&held(&all)), Ok(()));
        for cut in 0..acked.len() {
            let err = ledger.check(&held(&acked[..cut])).unwrap_err();
            assert!(err.contains("acknowledged batch 0 lost"), "{err}");
        }
        for cut in 1..unknown.len() {
            let rows: Vec<Row> = acked.iter().chain(&unknown[..cut]).copied().collect();
            let err = ledger.check(&held(&rows)).unwrap_err();
            assert!(err.contains("partly present"), "{err}");
        }
        let mut doubled = held(&acked);
        *doubled.get_mut(&acked[2]).unwrap() = 2;
        assert!(ledger
            .check(&doubled)
            .unwrap_err()
            .contains("more than once"));
        let mut foreign = held(&acked);
        foreign.insert((9, 9, 9), 1);
        assert!(ledger.check(&foreign).unwrap_err().contains("nobody wrote"));
    }
}
