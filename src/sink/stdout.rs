//! The stdout sink: one JSON line per charge, flushed per batch. A charge
//! counts as delivered once its line is written and flushed to the pipe.

use std::io::Write;

use super::{Envelope, Outcome, Sink, SinkHealth};

#[derive(Debug, Default)]
pub struct StdoutSink {
    failed: Option<String>,
}

impl StdoutSink {
    pub fn new() -> StdoutSink {
        StdoutSink::default()
    }
}

impl Sink for StdoutSink {
    async fn send(&mut self, batch: &[Envelope]) -> Vec<Outcome> {
        let mut out = std::io::stdout().lock();
        let mut buf = Vec::with_capacity(batch.iter().map(|e| e.payload.len() + 1).sum());
        for e in batch {
            buf.extend_from_slice(&e.payload);
            buf.push(b'\n');
        }
        // A write error (closed pipe, full disk) delivers nothing of the
        // batch; we cannot know which lines the reader got.
        match out.write_all(&buf).and_then(|_| out.flush()) {
            Ok(()) => {
                self.failed = None;
                vec![Outcome::Delivered; batch.len()]
            }
            Err(e) => {
                let error = format!("writing to stdout: {e}");
                self.failed = Some(error.clone());
                // One failed attempt, charged to the first charge; the
                // rest were not delivered because of it.
                let mut out = vec![Outcome::NotSent; batch.len()];
                if let Some(first) = out.first_mut() {
                    *first = Outcome::Retry {
                        error,
                        retry_after: None,
                    };
                }
                out
            }
        }
    }

    async fn check(&mut self) -> anyhow::Result<String> {
        Ok("stdout sink: nothing to reach".into())
    }

    fn health(&self) -> SinkHealth {
        SinkHealth {
            connected: self.failed.is_none(),
            alert: self.failed.clone(),
        }
    }
}
