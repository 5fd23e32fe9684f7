//! The body of a `/v1/query` answer, encoded batch by batch as DataFusion
//! produces them and capped at `--max-query-result-bytes`: only the encoded
//! bytes (and the batch at hand) are held, never every batch plus their
//! encoding, and a result past the cap is refused before it grows further.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;

/// The formats `/v1/query` answers in (`?format=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Arrow,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "arrow" => Some(Format::Arrow),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// Why a body could not be made.
#[derive(Debug)]
pub enum BodyError {
    /// The encoded result passed the cap (bytes).
    TooLarge(usize),
    /// The result cannot be written in the format (a map column as CSV).
    Encode(ArrowError),
}

impl From<ArrowError> for BodyError {
    fn from(e: ArrowError) -> Self {
        BodyError::Encode(e)
    }
}

/// A body being encoded. The Arrow writer is made at the first batch so its
/// schema is the batches' own (field metadata and nullability included).
pub struct ResultBody {
    format: Format,
    limit: usize,
    out: Vec<u8>,
    ipc: Option<StreamWriter<Vec<u8>>>,
    rows: usize,
}

impl ResultBody {
    pub fn new(format: Format, limit: usize) -> Self {
        Self {
            format,
            limit,
            out: Vec::new(),
            ipc: None,
            rows: 0,
        }
    }

    /// Rows encoded so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Encodes one batch; refuses it if the body would pass the cap.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), BodyError> {
        match self.format {
            Format::Csv => self.push_csv(batch)?,
            Format::Json => self.push_json(batch)?,
            Format::Arrow => self.ipc_writer(&batch.schema())?.write(batch)?,
        }
        self.rows += batch.num_rows();
        self.check()
    }

    /// The finished body; `schema` shapes an empty result (CSV header,
    /// Arrow schema message).
    pub fn finish(mut self, schema: &SchemaRef) -> Result<Vec<u8>, BodyError> {
        match self.format {
            Format::Csv if self.out.is_empty() => {
                // Still write the header line.
                self.push_csv(&RecordBatch::new_empty(schema.clone()))?;
            }
            Format::Csv => {}
            Format::Json if self.out.is_empty() => self.out.extend_from_slice(b"[]"),
            Format::Json => self.out.push(b']'),
            Format::Arrow => {
                self.ipc_writer(schema)?;
                let mut w = self.ipc.take().expect("made above");
                w.finish()?;
                self.out = w.into_inner()?;
            }
        }
        self.check()?;
        Ok(self.out)
    }

    fn len(&self) -> usize {
        self.out.len() + self.ipc.as_ref().map_or(0, |w| w.get_ref().len())
    }

    fn check(&self) -> Result<(), BodyError> {
        if self.len() > self.limit {
            return Err(BodyError::TooLarge(self.limit));
        }
        Ok(())
    }

    fn push_csv(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let header = self.out.is_empty();
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(header)
            .build(&mut self.out);
        w.write(batch)
    }

    /// Each batch is written as its own JSON array, then spliced in: the
    /// brackets dropped, a comma between batches.
    fn push_json(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let mut piece = Vec::new();
        let mut w = arrow::json::ArrayWriter::new(&mut piece);
        w.write(batch)?;
        w.finish()?;
        drop(w);
        if piece.len() > 2 {
            self.out.push(if self.out.is_empty() { b'[' } else { b',' });
            self.out.extend_from_slice(&piece[1..piece.len() - 1]);
        }
        Ok(())
    }

    fn ipc_writer(&mut self, schema: &SchemaRef) -> Result<&mut StreamWriter<Vec<u8>>, ArrowError> {
        if self.ipc.is_none() {
            self.ipc = Some(StreamWriter::try_new(Vec::new(), schema)?);
        }
        Ok(self.ipc.as_mut().expect("made above"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(from: i64, rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let n: Vec<i64> = (from..from + rows as i64).collect();
        let s: Vec<String> = n.iter().map(|v| format!("v{v}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(n)),
                Arc::new(StringArray::from(s)),
            ],
        )
        .unwrap()
    }

    fn whole(format: Format, batches: &[RecordBatch]) -> Vec<u8> {
        let mut body = ResultBody::new(format, usize::MAX);
        for b in batches {
            body.push(b).unwrap();
        }
        body.finish(&batch(0, 0).schema()).unwrap()
    }

    /// What encoding every batch in one writer gives, the way the body was
    /// made before it was built batch by batch.
    fn reference(format: Format, batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        match format {
            Format::Csv => {
                let mut w = arrow::csv::Writer::new(&mut out);
                if batches.is_empty() {
                    w.write(&batch(0, 0)).unwrap();
                }
                for b in batches {
                    w.write(b).unwrap();
                }
            }
            Format::Json => {
                let mut w = arrow::json::ArrayWriter::new(&mut out);
                for b in batches {
                    w.write(b).unwrap();
                }
                w.finish().unwrap();
                drop(w);
                if out.is_empty() {
                    out.extend_from_slice(b"[]");
                }
            }
            Format::Arrow => {
                let mut w = StreamWriter::try_new(&mut out, &batch(0, 0).schema()).unwrap();
                for b in batches {
                    w.write(b).unwrap();
                }
                w.finish().unwrap();
            }
        }
        out
    }

    #[test]
    fn a_body_built_batch_by_batch_matches_one_written_whole() {
        for format in [Format::Json, Format::Csv, Format::Arrow] {
            for sizes in [vec![], vec![0], vec![3], vec![0, 2, 0, 5], vec![1, 1, 1, 1]] {
                let mut from = 0;
                let batches: Vec<_> = sizes
                    .iter()
                    .map(|&n| {
                        from += n as i64;
                        batch(from, n)
                    })
                    .collect();
                assert_eq!(
                    whole(format, &batches),
                    reference(format, &batches),
                    "{format:?} {sizes:?}"
                );
            }
        }
    }

    #[test]
    fn a_result_past_the_cap_is_refused_at_the_batch_that_passes_it() {
        for format in [Format::Json, Format::Csv, Format::Arrow] {
            let size = reference(format, &[batch(0, 100)]).len();
            let mut body = ResultBody::new(format, size * 3);
            let mut pushed = 0;
            let err = loop {
                match body.push(&batch(0, 100)) {
                    Ok(()) => pushed += 1,
                    Err(e) => break e,
                }
                assert!(pushed < 10, "{format:?}: never refused");
            };
            assert!(
                matches!(err, BodyError::TooLarge(l) if l == size * 3),
                "{format:?}"
            );
            assert!(
                (2..=3).contains(&pushed),
                "{format:?}: {pushed} batches fit"
            );
        }
    }
}
