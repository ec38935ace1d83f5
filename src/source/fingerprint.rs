//! File generation identity: device + inode + a hash of the first bytes.
//!
//! (dev, ino) alone is not enough: inodes are reused as soon as a file is
//! deleted, and a file truncated and rewritten in place keeps its inode. The
//! hash of the first bytes alone is not enough either: PaperCut files share
//! their header line, and a small file's first bytes say little (Vector's and
//! Filebeat's checksum-only identity fail exactly there). Together they do:
//! same inode *and* same first bytes is the same generation.
//!
//! The hash covers the first `min(size, FINGERPRINT_BYTES)` bytes and grows
//! with the file, so a file of a few bytes is followed at once and stays the
//! same generation as it grows.

use sha2::{Digest, Sha256};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

/// The fingerprint stops growing at this many bytes.
pub const FINGERPRINT_BYTES: u64 = 1024;

/// (device, inode).
pub type FileId = (u64, u64);

pub fn file_id(meta: &Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

/// What changes when a file is written, truncated or replaced: cheap to
/// compare, so that the first bytes are only re-read after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatKey {
    pub size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl StatKey {
    pub fn of(meta: &Metadata) -> StatKey {
        StatKey {
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Number of bytes hashed.
    pub len: u64,
    /// Hex SHA-256 of those bytes.
    pub hash: String,
}

impl Fingerprint {
    /// Fingerprint of the first `min(size, FINGERPRINT_BYTES)` bytes of a
    /// file of `size` bytes (fewer if it shrinks meanwhile).
    pub fn of_file(file: &File, size: u64) -> io::Result<Fingerprint> {
        let bytes = read_prefix(file, size.min(FINGERPRINT_BYTES))?;
        Ok(Fingerprint::of_bytes(&bytes))
    }

    pub fn of_bytes(bytes: &[u8]) -> Fingerprint {
        Fingerprint {
            len: bytes.len() as u64,
            hash: hex::encode(Sha256::digest(bytes)),
        }
    }
}

/// How a file compares with a recorded fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Starts with the fingerprinted bytes; no more bytes to cover.
    Same,
    /// Starts with the fingerprinted bytes and has more: the wider
    /// fingerprint to record.
    Grown(Fingerprint),
    /// Shorter than the fingerprinted bytes, or different: not the same
    /// content any more.
    Differs,
}

/// Does `file` (of `size` bytes) still start with the `len` bytes whose hex
/// SHA-256 is `hash`?
pub fn check(file: &File, size: u64, len: u64, hash: &str) -> io::Result<Check> {
    if len > FINGERPRINT_BYTES {
        // Not one of ours (a damaged checkpoint): never read that much.
        return Ok(Check::Differs);
    }
    let want = size.min(FINGERPRINT_BYTES).max(len);
    let bytes = read_prefix(file, want)?;
    if (bytes.len() as u64) < len {
        return Ok(Check::Differs);
    }
    let len = len as usize;
    if hex::encode(Sha256::digest(&bytes[..len])) != hash {
        return Ok(Check::Differs);
    }
    if bytes.len() > len {
        Ok(Check::Grown(Fingerprint::of_bytes(&bytes)))
    } else {
        Ok(Check::Same)
    }
}

/// Up to `n` bytes from the start of the file (fewer at end of file).
fn read_prefix(file: &File, n: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        t.flush().unwrap();
        let f = File::open(t.path()).unwrap();
        (t, f)
    }

    #[test]
    fn grows_then_stops_at_limit() {
        let (mut t, f) = file_with(b"abc");
        let fp = Fingerprint::of_file(&f, 3).unwrap();
        assert_eq!(fp.len, 3);
        assert_eq!(check(&f, 3, fp.len, &fp.hash).unwrap(), Check::Same);
        t.write_all(&[b'x'; 2000]).unwrap();
        t.flush().unwrap();
        let Check::Grown(big) = check(&f, 2003, fp.len, &fp.hash).unwrap() else {
            panic!("should grow")
        };
        assert_eq!(big.len, FINGERPRINT_BYTES);
        assert_eq!(check(&f, 2003, big.len, &big.hash).unwrap(), Check::Same);
    }

    #[test]
    fn differs_when_rewritten_or_shorter() {
        let (_t, f) = file_with(b"hello world");
        let fp = Fingerprint::of_bytes(b"hellO");
        assert_eq!(check(&f, 11, fp.len, &fp.hash).unwrap(), Check::Differs);
        let fp = Fingerprint::of_bytes(b"hello world and more");
        assert_eq!(check(&f, 11, fp.len, &fp.hash).unwrap(), Check::Differs);
    }
}
