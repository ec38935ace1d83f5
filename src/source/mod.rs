//! Source stage: find the files, follow them as they grow, know which file
//! is which across rotation, truncation and restarts, and hand over complete
//! lines with the position to commit after them.
//!
//! The parts, after Vector's file-source: `lines` splits bytes into lines,
//! `fingerprint` tells file generations apart, `follower` watches and reads.
//! Checkpoints are persisted by the store, in the same transaction as the
//! charges read up to them; this stage never writes state itself.

pub mod fingerprint;
pub mod follower;
pub mod historical;
pub mod lines;
mod watcher;

use std::path::PathBuf;
use std::time::Duration;

pub use follower::{Follower, Generations};
pub use lines::{Line, LineSplitter, LineUnit};
pub use watcher::Bell;

/// The persisted position of one *generation* of a file: a file as identified
/// by device, inode and its first bytes. A truncated or replaced file is a
/// new generation; a renamed one is the same generation under a new path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Unique across all sources of a state database, never reused.
    pub generation: u64,
    /// The `[[source]]` following it (its name).
    pub source: String,
    /// Where the file was last seen.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// How many of the file's first bytes the fingerprint covers (grows with
    /// the file up to `fingerprint::FINGERPRINT_BYTES`).
    pub fp_len: u64,
    /// Hex SHA-256 of the first `fp_len` bytes.
    pub fingerprint: String,
    /// Offset just past the last complete line handed over.
    pub offset: u64,
    /// Number of lines handed over (the next line is `line + 1`).
    pub line: u64,
    /// File size when last looked at (for lag).
    pub size: u64,
    /// Read to the end after rotation/deletion/truncation; never read again.
    pub finished: bool,
}

#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// The source's name, recorded with each generation it follows.
    pub source: String,
    /// A file or a glob (absolute).
    pub pattern: String,
    /// Stat poll period: rescans the glob and stats every open file, so that
    /// following works with no inotify at all (NFS/SMB).
    pub poll_interval: Duration,
    /// A file not grown for this long is *idle*: looked at only every
    /// `idle_poll_interval` (or when inotify reports a write to it); when
    /// every file is idle the glob runs that often too. As Vector's file
    /// source does: a busy file's polls do not stat a year of idle ones,
    /// and a quiet daemon wakes rarely.
    pub idle_after: Duration,
    pub idle_poll_interval: Duration,
    /// How long a renamed-away or deleted file stays open for late writes
    /// after its last growth, before it is finished and closed.
    pub rotate_grace: Duration,
    pub max_line_bytes: usize,
    /// Bytes read per `read` call.
    pub read_chunk: usize,
    /// At most this many lines per `Lines` event (keeps transactions and
    /// memory bounded when catching up on a large file).
    pub max_batch_lines: usize,
}

/// What the follower reports.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// Complete lines of one generation, in file order, and the checkpoint
    /// that holds after them. `lines` may be empty (a checkpoint-only update:
    /// new generation, grown fingerprint, finished).
    ///
    /// With `prefix = true` the lines were already handed over before a
    /// restart: they are re-read only so that per-file state (header,
    /// ordinals of identical lines) can be rebuilt; they must not be emitted
    /// again and the checkpoint is unchanged.
    Lines {
        checkpoint: Checkpoint,
        lines: Vec<Line>,
        prefix: bool,
    },
    /// Something an operator should know; also counted in metrics.
    Notice(Notice),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A file (generation) is followed for the first time.
    Opened { path: PathBuf, generation: u64 },
    /// The file shrank below our position, or its first bytes changed (it
    /// was rewritten in place): read again from the start as a new
    /// generation. Lines written between our last read and the
    /// truncation are lost unless the copy (copy-then-truncate) matches the
    /// glob, in which case they are read from the copy.
    Truncated {
        path: PathBuf,
        offset: u64,
        size: u64,
    },
    /// The file at `path` is no longer the generation we followed (renamed
    /// away or deleted); it is read to its end and then finished.
    Rotated { path: PathBuf, generation: u64 },
    /// A generation was read to its end and closed for good.
    Finished { path: PathBuf, generation: u64 },
    /// An unfinished generation cannot be read to its end: deleted while we
    /// were down (or while closed for being idle), or unreadable until its
    /// grace period ran out.
    Lost { path: PathBuf, generation: u64 },
    /// A generation was finished (rotated and idle, or truncated) with an
    /// incomplete last line of `len` bytes at `offset` that never got its
    /// line end: it was not emitted.
    Unterminated {
        path: PathBuf,
        generation: u64,
        offset: u64,
        len: u64,
        /// Its line number and bytes (at most `max_line_bytes` of them), kept
        /// here because the file at `path` may be another one by now.
        line: u64,
        bytes: Vec<u8>,
    },
    /// A file matched but cannot be read (permissions, I/O error).
    Unreadable { path: PathBuf, error: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("bad source path pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
