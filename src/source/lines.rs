//! Splitting a byte stream into complete lines.
//!
//! Shared by following (where an unterminated last line waits for its line
//! end) and by replay/parse (where a closed file's last line is taken as is).

/// One complete line, without its line end (`\n` or `\r\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Byte offset of the line's first byte in the file.
    pub offset: u64,
    /// 1-based line number.
    pub number: u64,
    /// The line's bytes without the line end; for an over-long line, only its
    /// first `max_line_bytes` bytes.
    pub bytes: Vec<u8>,
    /// The full length when the line was longer than the limit; such a line
    /// becomes a dead letter and reading goes on after it.
    pub too_long: Option<u64>,
}

impl Line {
    /// Byte offset just past this line's end.
    pub fn end(&self, terminator_len: u64) -> u64 {
        self.offset + self.bytes.len() as u64 + terminator_len
    }
}

/// Incremental splitter: feed it chunks, take out complete lines. Memory is
/// bounded by `max_line_bytes` however long a line is, so one huge line
/// neither exhausts memory nor stops the file.
#[derive(Debug)]
pub struct LineSplitter {
    max_line_bytes: usize,
    /// Offset of the first byte not yet returned as part of a line.
    offset: u64,
    /// Number the next line will get.
    next_number: u64,
    /// Bytes of the current (incomplete) line, capped at `max_line_bytes`.
    pending: Vec<u8>,
    /// Full length of the current line so far (may exceed `pending.len()`).
    pending_len: u64,
    /// Last byte of the current line so far (to spot a CR before the LF even
    /// when the line's tail was dropped for being too long).
    pending_last: u8,
}

impl LineSplitter {
    /// Start at `offset` with the next line numbered `next_number`.
    pub fn new(max_line_bytes: usize, offset: u64, next_number: u64) -> LineSplitter {
        LineSplitter {
            max_line_bytes,
            offset,
            next_number,
            pending: Vec::new(),
            pending_len: 0,
            pending_last: 0,
        }
    }

    /// Offset just past the last complete line returned: the position to
    /// commit. Bytes of an incomplete line are not counted.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number the next line will get (= lines consumed so far + 1).
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    /// Bytes held for an incomplete line.
    pub fn pending_len(&self) -> u64 {
        self.pending_len
    }

    /// The incomplete line's bytes (its first `max_line_bytes`, at most).
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending[..self.pending.len().min(self.max_line_bytes)]
    }

    /// Feed a chunk that continues the stream; complete lines go to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Line>) {
        while !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.push_capped(&chunk[..i]);
                    self.emit(true, out);
                    chunk = &chunk[i + 1..];
                }
                None => {
                    self.push_capped(chunk);
                    return;
                }
            }
        }
    }

    /// The stream is closed (a historical file): take an unterminated last
    /// line as complete.
    pub fn finish(&mut self, out: &mut Vec<Line>) {
        if self.pending_len > 0 {
            self.emit(false, out);
        }
    }

    fn push_capped(&mut self, bytes: &[u8]) {
        // Keep one byte more than the limit so that the CR of a CRLF line
        // exactly at the limit can still be told apart from content.
        let room = (self.max_line_bytes + 1).saturating_sub(self.pending.len());
        let take = bytes.len().min(room);
        self.pending.extend_from_slice(&bytes[..take]);
        self.pending_len += bytes.len() as u64;
        if let Some(&b) = bytes.last() {
            self.pending_last = b;
        }
    }

    /// Emit the pending line. `pending_len` counts the content (with a CR,
    /// if any) but not the LF.
    fn emit(&mut self, lf: bool, out: &mut Vec<Line>) {
        let mut bytes = std::mem::take(&mut self.pending);
        let mut content_len = self.pending_len;
        if content_len > 0 && self.pending_last == b'\r' {
            if bytes.len() as u64 == content_len {
                bytes.pop();
            }
            content_len -= 1;
        }
        let too_long = if content_len > self.max_line_bytes as u64 {
            bytes.truncate(self.max_line_bytes);
            Some(content_len)
        } else {
            None
        };
        out.push(Line {
            offset: self.offset,
            number: self.next_number,
            bytes,
            too_long,
        });
        self.offset += self.pending_len + u64::from(lf);
        self.next_number += 1;
        self.pending_len = 0;
        self.pending_last = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize, finish: bool) -> (Vec<Line>, u64) {
        let mut s = LineSplitter::new(max, 0, 1);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        if finish {
            s.finish(&mut out);
        }
        (out, s.offset())
    }

    #[test]
    fn lf_crlf_and_partial_lines() {
        let (lines, off) = split(&[b"a\r\nbb", b"b\nccc"], 100, false);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].bytes, b"a");
        assert_eq!((lines[1].offset, lines[1].number), (3, 2));
        assert_eq!(lines[1].bytes, b"bbb");
        // The partial "ccc" is not emitted and not counted in the offset.
        assert_eq!(off, 7);
        let (lines, off) = split(&[b"a\r\nbb", b"b\nccc"], 100, true);
        assert_eq!(lines[2].bytes, b"ccc");
        assert_eq!(off, 10);
    }

    #[test]
    fn empty_lines_and_lone_cr() {
        let (lines, _) = split(&[b"\n\r\nx\ry\n"], 100, false);
        let got: Vec<&[u8]> = lines.iter().map(|l| &l.bytes[..]).collect();
        assert_eq!(got, vec![&b""[..], b"", b"x\ry"]);
    }

    #[test]
    fn over_long_line_is_marked_and_reading_goes_on() {
        let long = vec![b'x'; 1000];
        let (lines, off) = split(&[&long, b"\r\nok\n"], 300, false);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].too_long, Some(1000));
        assert_eq!(lines[0].bytes.len(), 300);
        assert_eq!(lines[1].bytes, b"ok");
        assert_eq!(lines[1].offset, 1002);
        assert_eq!(off, 1005);
    }

    #[test]
    fn line_exactly_at_limit_with_crlf_is_not_too_long() {
        let line = [vec![b'y'; 300], b"\r\n".to_vec()].concat();
        let (lines, _) = split(&[&line], 300, false);
        assert_eq!(lines[0].too_long, None);
        assert_eq!(lines[0].bytes.len(), 300);
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let data = b"h1\th2\r\nv1\tv2\n\nlast\r\n";
        let whole = split(&[data], 100, false);
        let chunks: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(split(&chunks, 100, false), whole);
    }
}
