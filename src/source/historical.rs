//! Reading a closed file once, start to end (`parse`, `replay`): unlike
//! following, the last line counts even without a line end, and gzip
//! archives (`.gz`) are read transparently.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{Line, LineSplitter};

/// Read `path` and call `each` for every line, in order, with the number of
/// (uncompressed) bytes read so far. Each line is lent: its buffer is
/// reused for the next one, so nothing is allocated per line and memory
/// stays flat in the file size (a caller that keeps a line clones it).
pub fn read_lines(
    path: &Path,
    max_line_bytes: usize,
    mut each: impl FnMut(&Line, u64),
) -> std::io::Result<u64> {
    let file = File::open(path)?;
    let mut reader: Box<dyn Read> = if is_gzip(path) {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        )))
    } else {
        Box::new(file)
    };
    let mut splitter = LineSplitter::new(max_line_bytes, 0, 1);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        splitter.feed_each(&buf[..n], |line| each(line, total));
    }
    splitter.finish_each(|line| each(line, total));
    Ok(total)
}

pub fn is_gzip(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}
