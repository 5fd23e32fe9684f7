//! Exactly-once writers over HTTP, as the Durable Streams protocol
//! specifies them: idempotent producers (per `Producer-Id` epoch fencing
//! and sequence checking, Kafka's scheme, §5.2.1) and `Stream-Seq`
//! (a writer-chosen, strictly increasing token, §5.2).
//!
//! Both the named streams and the `metrics` stream keep a [`Writers`]
//! table and persist each accepted tuple atomically with the data it
//! describes, so after a crash a retried write is either present and known,
//! or neither.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An idempotent producer's `(Producer-Id, Producer-Epoch, Producer-Seq)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerTuple {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// Longest producer id accepted (bytes): ids are stored with every record
/// the producer writes and in every manifest until it expires.
pub const MAX_PRODUCER_ID_BYTES: usize = 256;

/// Largest epoch or sequence number (JavaScript's safe integer range, as
/// the Durable Streams protocol allows).
pub const MAX_PRODUCER_NUMBER: u64 = (1 << 53) - 1;

impl ProducerTuple {
    /// The tuple from its three header values, all or none; an error names
    /// the header at fault (`names` are the headers' names as the caller's
    /// protocol spells them: id, epoch, seq).
    pub fn from_headers(
        values: [Option<&str>; 3],
        names: [&str; 3],
    ) -> Result<Option<Self>, String> {
        let [id, epoch, seq] = match values {
            [None, None, None] => return Ok(None),
            [Some(id), Some(e), Some(s)] => [id, e, s],
            _ => {
                let missing: Vec<&str> = (0..3)
                    .filter(|&i| values[i].is_none())
                    .map(|i| names[i])
                    .collect();
                return Err(format!(
                    "{}, {} and {} must be sent together (missing {})",
                    names[0],
                    names[1],
                    names[2],
                    missing.join(", ")
                ));
            }
        };
        if id.is_empty() {
            return Err(format!("{} must not be empty", names[0]));
        }
        if id.len() > MAX_PRODUCER_ID_BYTES {
            return Err(format!(
                "{} is {} bytes long; at most {MAX_PRODUCER_ID_BYTES} are allowed",
                names[0],
                id.len()
            ));
        }
        Ok(Some(ProducerTuple {
            id: id.to_string(),
            epoch: number(names[1], epoch)?,
            seq: number(names[2], seq)?,
        }))
    }
}

/// A non-negative decimal without sign or leading zeros, up to
/// [`MAX_PRODUCER_NUMBER`].
fn number(name: &str, s: &str) -> Result<u64, String> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let canonical = s == "0" || !s.starts_with('0');
    match s.parse::<u64>() {
        Ok(v) if digits && canonical && v <= MAX_PRODUCER_NUMBER => Ok(v),
        _ => Err(format!(
            "{name} must be an integer from 0 to {MAX_PRODUCER_NUMBER} without sign or leading zeros (got {s:?})"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub epoch: u64,
    pub last_seq: u64,
    /// Unix seconds of the last accepted append (or of the replay that
    /// found it), for [`Producers::forget_idle`].
    #[serde(default)]
    pub seen: i64,
}

/// What to do with an append that carries producer headers.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// `Stream-Seq` did not increase.
    SeqRegression { last: String },
}

/// The newest accepted tuple of every producer seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Producers(BTreeMap<String, ProducerState>);

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
    pub fn record(&mut self, t: &ProducerTuple, now_secs: i64) {
        self.0.insert(
            t.id.clone(),
            ProducerState {
                epoch: t.epoch,
                last_seq: t.seq,
                seen: now_secs,
            },
        );
    }

    /// Forgets producers with no append since `before` (Unix seconds), as
    /// Kafka expires idle producer ids: a producer back after that must
    /// start over at sequence 0 (a higher one is a gap), and a batch resent
    /// from before that is new data again.
    pub fn forget_idle(&mut self, before: i64) {
        self.0.retain(|_, s| s.seen >= before);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A stream's writer state: its producers and its last `Stream-Seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writers {
    #[serde(default)]
    pub producers: Producers,
    #[serde(default)]
    pub last_stream_seq: Option<String>,
}

impl Writers {
    /// Checks an append in the protocol's order: producer, then
    /// `Stream-Seq` (a duplicate is answered before its `Stream-Seq` is
    /// looked at, so a retry never fails on its own token).
    pub fn check(&self, producer: Option<&ProducerTuple>, stream_seq: Option<&str>) -> Verdict {
        if let Some(p) = producer {
            let v = self.producers.check(p);
            if v != Verdict::Accept {
                return v;
            }
        }
        match (stream_seq, &self.last_stream_seq) {
            // Compared as bytes: the protocol orders Stream-Seq values
            // lexicographically.
            (Some(seq), Some(last)) if seq.as_bytes() <= last.as_bytes() => {
                Verdict::SeqRegression { last: last.clone() }
            }
            _ => Verdict::Accept,
        }
    }

    /// Records what an accepted append carried, at `now_secs` (Unix
    /// seconds: when the producer was last seen).
    pub fn record(
        &mut self,
        producer: Option<&ProducerTuple>,
        stream_seq: Option<&str>,
        now_secs: i64,
    ) {
        if let Some(p) = producer {
            self.producers.record(p, now_secs);
        }
        if let Some(s) = stream_seq {
            self.last_stream_seq = Some(s.to_string());
        }
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
        p.record(&t("a", 0, 0), 0);
        assert_eq!(p.check(&t("a", 0, 0)), Verdict::Duplicate { last_seq: 0 });
        assert_eq!(p.check(&t("a", 0, 1)), Verdict::Accept);
        p.record(&t("a", 0, 1), 0);
        assert_eq!(
            p.check(&t("a", 0, 3)),
            Verdict::Gap {
                expected: 2,
                received: 3
            }
        );
        assert_eq!(p.check(&t("a", 1, 1)), Verdict::EpochNeedsSeqZero);
        assert_eq!(p.check(&t("a", 1, 0)), Verdict::Accept);
        p.record(&t("a", 1, 0), 0);
        assert_eq!(p.check(&t("a", 0, 2)), Verdict::StaleEpoch { current: 1 });
        // Producers are independent.
        assert_eq!(p.check(&t("b", 0, 0)), Verdict::Accept);
    }

    #[test]
    fn stream_seq_must_grow_and_a_duplicate_wins_over_it() {
        let mut w = Writers::default();
        assert_eq!(w.check(None, Some("b")), Verdict::Accept);
        w.record(Some(&t("a", 0, 0)), Some("b"), 0);
        for stale in ["b", "a", "B"] {
            assert_eq!(
                w.check(None, Some(stale)),
                Verdict::SeqRegression { last: "b".into() },
                "{stale}"
            );
        }
        assert_eq!(w.check(None, Some("ba")), Verdict::Accept);
        assert_eq!(w.check(None, None), Verdict::Accept);
        // The retry of the append that set "b" is a duplicate, not a regression.
        assert_eq!(
            w.check(Some(&t("a", 0, 0)), Some("b")),
            Verdict::Duplicate { last_seq: 0 }
        );
        // Persisted as plain JSON (the manifest carries it).
        let back: Writers = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn headers_are_all_or_none_and_strict() {
        let names = ["producer-id", "producer-epoch", "producer-seq"];
        let parse = |id, e, s| ProducerTuple::from_headers([id, e, s], names);
        assert_eq!(parse(None, None, None), Ok(None));
        assert_eq!(
            parse(Some("p"), Some("2"), Some("7")),
            Ok(Some(t("p", 2, 7)))
        );
        let long = "x".repeat(MAX_PRODUCER_ID_BYTES + 1);
        let cases: [([Option<&str>; 3], &str); 8] = [
            ([Some("p"), None, None], "producer-epoch, producer-seq"),
            ([None, Some("1"), Some("1")], "missing producer-id"),
            (
                [Some(""), Some("1"), Some("1")],
                "producer-id must not be empty",
            ),
            (
                [Some(&long), Some("1"), Some("1")],
                "producer-id is 257 bytes",
            ),
            ([Some("p"), Some("x"), Some("1")], "producer-epoch must be"),
            ([Some("p"), Some("1"), Some("-1")], "producer-seq must be"),
            ([Some("p"), Some("01"), Some("1")], "producer-epoch must be"),
            (
                [Some("p"), Some("1"), Some("9007199254740992")],
                "producer-seq must be",
            ),
        ];
        for (values, says) in cases {
            let err = ProducerTuple::from_headers(values, names).unwrap_err();
            assert!(err.contains(says), "{values:?}: {err}");
        }
    }

    #[test]
    fn idle_producers_are_forgotten_and_must_start_over() {
        let mut p = Producers::default();
        let now = 1_700_000_000;
        p.record(&t("old", 0, 5), now - 100);
        p.record(&t("new", 0, 5), now);
        p.forget_idle(now - 50);
        assert_eq!(p.len(), 1);
        assert_eq!(
            p.check(&t("old", 0, 6)),
            Verdict::Gap {
                expected: 0,
                received: 6
            }
        );
        assert_eq!(p.check(&t("new", 0, 5)), Verdict::Duplicate { last_seq: 5 });
    }
}
