//! The stdout sink: one JSON line per charge, flushed per batch. A charge
//! counts as delivered once its line is written and flushed to the pipe.

use std::io::Write;
use std::time::Duration;

use super::{Envelope, Outcome, Sink, SinkHealth};

/// How long a write may block (a reader that stopped reading, a full pipe)
/// before the batch counts as failed. The write itself goes on in its
/// blocking thread; nothing else is written until it ends, so lines never
/// interleave, and the async runtime is never held by it.
const STALL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct StdoutSink {
    failed: Option<String>,
    /// A write that outlived [`STALL`], still running.
    stalled: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl StdoutSink {
    pub fn new() -> StdoutSink {
        StdoutSink::default()
    }

    fn failure(&mut self, error: String, n: usize) -> Vec<Outcome> {
        self.failed = Some(error.clone());
        // One failed attempt, charged to the first charge; the rest were
        // not delivered because of it.
        let mut out = vec![Outcome::NotSent; n];
        if let Some(first) = out.first_mut() {
            *first = Outcome::Retry {
                error,
                retry_after: None,
            };
        }
        out
    }
}

impl Sink for StdoutSink {
    async fn send(&mut self, batch: &[Envelope]) -> Vec<Outcome> {
        if batch.is_empty() {
            return Vec::new();
        }
        if let Some(h) = &self.stalled {
            if !h.is_finished() {
                return self.failure(
                    "stdout is not being read: an earlier write is still blocked".into(),
                    batch.len(),
                );
            }
            // Its batch was counted as failed and is sent again: at worst
            // a repeat with the same id.
            self.stalled = None;
        }
        let mut buf = Vec::with_capacity(batch.iter().map(|e| e.payload.len() + 1).sum());
        for e in batch {
            buf.extend_from_slice(&e.payload);
            buf.push(b'\n');
        }
        // A write error (closed pipe, full disk) delivers nothing of the
        // batch; we cannot know which lines the reader got.
        let mut write = tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf).and_then(|_| out.flush())
        });
        match tokio::time::timeout(STALL, &mut write).await {
            Ok(Ok(Ok(()))) => {
                self.failed = None;
                vec![Outcome::Delivered; batch.len()]
            }
            Ok(Ok(Err(e))) => self.failure(format!("writing to stdout: {e}"), batch.len()),
            Ok(Err(e)) => self.failure(format!("writing to stdout: {e}"), batch.len()),
            Err(_) => {
                self.stalled = Some(write);
                self.failure(
                    format!("writing to stdout blocked for {STALL:?}: is the reader reading?"),
                    batch.len(),
                )
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
