//! Idempotent producers: per `(stream, Producer-Id)` epoch fencing and
//! sequence checking, the Kafka-style scheme the Durable Streams protocol
//! specifies (§5.2.1).

use std::collections::HashMap;

use super::record::ProducerTuple;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    pub epoch: u64,
    pub last_seq: u64,
}

/// What to do with an append that carries producer headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New data: append it, then record the tuple.
    Accept,
    /// Already appended: answer success without appending. Carries the
    /// highest sequence accepted in this epoch.
    Duplicate { last_seq: u64 },
    /// An older epoch than the server's (a zombie): 403 with the current one.
    StaleEpoch { current: u64 },
    /// A new epoch must start at sequence 0.
    EpochNeedsSeqZero,
    /// A sequence was skipped.
    Gap { expected: u64, received: u64 },
}

#[derive(Debug, Clone, Default)]
pub struct Producers(HashMap<String, ProducerState>);

impl Producers {
    pub fn check(&self, t: &ProducerTuple) -> Verdict {
        let Some(s) = self.0.get(&t.id) else {
            // First sight of this producer, in whatever epoch it declares.
            return if t.seq == 0 {
                Verdict::Accept
            } else {
                Verdict::Gap {
                    expected: 0,
                    received: t.seq,
                }
            };
        };
        if t.epoch < s.epoch {
            return Verdict::StaleEpoch { current: s.epoch };
        }
        if t.epoch > s.epoch {
            return if t.seq == 0 {
                Verdict::Accept
            } else {
                Verdict::EpochNeedsSeqZero
            };
        }
        if t.seq <= s.last_seq {
            Verdict::Duplicate {
                last_seq: s.last_seq,
            }
        } else if t.seq == s.last_seq + 1 {
            Verdict::Accept
        } else {
            Verdict::Gap {
                expected: s.last_seq + 1,
                received: t.seq,
            }
        }
    }

    /// Records an accepted tuple (after its record is durable, or while
    /// replaying the log).
    pub fn record(&mut self, t: &ProducerTuple) {
        self.0.insert(
            t.id.clone(),
            ProducerState {
                epoch: t.epoch,
                last_seq: t.seq,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, epoch: u64, seq: u64) -> ProducerTuple {
        ProducerTuple {
            id: id.into(),
            epoch,
            seq,
        }
    }

    #[test]
    fn follows_the_protocol_table() {
        let mut p = Producers::default();
        assert_eq!(
            p.check(&t("a", 0, 1)),
            Verdict::Gap {
                expected: 0,
                received: 1
            }
        );
        assert_eq!(p.check(&t("a", 0, 0)), Verdict::Accept);
        p.record(&t("a", 0, 0));
        assert_eq!(p.check(&t("a", 0, 0)), Verdict::Duplicate { last_seq: 0 });
        assert_eq!(p.check(&t("a", 0, 1)), Verdict::Accept);
        p.record(&t("a", 0, 1));
        assert_eq!(
            p.check(&t("a", 0, 3)),
            Verdict::Gap {
                expected: 2,
                received: 3
            }
        );
        assert_eq!(p.check(&t("a", 1, 1)), Verdict::EpochNeedsSeqZero);
        assert_eq!(p.check(&t("a", 1, 0)), Verdict::Accept);
        p.record(&t("a", 1, 0));
        assert_eq!(p.check(&t("a", 0, 2)), Verdict::StaleEpoch { current: 1 });
        // Producers are independent.
        assert_eq!(p.check(&t("b", 0, 0)), Verdict::Accept);
    }
}
