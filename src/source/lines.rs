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

/// The line, its bytes taken out of `l`.
fn take_line(l: &mut Line) -> Line {
    Line {
        bytes: std::mem::take(&mut l.bytes),
        ..*l
    }
}

/// What a line end is made of. A file that starts with a UTF-16 byte order
/// mark (`FF FE` or `FE FF`) is split at the 16-bit units of LF (`0A 00` /
/// `00 0A`, at even offsets): splitting such a file at every `0A` byte would
/// cut characters such as `上` (`0A 4E`) in two. Offsets stay byte offsets
/// of the file; lines still hold their raw bytes (decoding is the format
/// stage's), and a line is emitted only once its whole LF unit is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineUnit {
    Byte,
    Utf16Le,
    Utf16Be,
}

impl LineUnit {
    /// From a file's first bytes: a UTF-16 BOM, else bytes.
    pub fn from_head(head: &[u8]) -> LineUnit {
        match head {
            [0xFF, 0xFE, ..] => LineUnit::Utf16Le,
            [0xFE, 0xFF, ..] => LineUnit::Utf16Be,
            _ => LineUnit::Byte,
        }
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
    /// The current line's last four bytes (UTF-16: the CR and LF units).
    tail: [u8; 4],
    /// `None` until the file's first two bytes were seen (from offset 0).
    unit: Option<LineUnit>,
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
            tail: [0; 4],
            // Started past the head: bytes, unless told (`set_unit`).
            unit: (offset > 0).then_some(LineUnit::Byte),
        }
    }

    /// How lines end, for a splitter that starts past the file's head (a
    /// resumed file: give `LineUnit::from_head` of its first bytes).
    pub fn set_unit(&mut self, unit: LineUnit) {
        self.unit = Some(unit);
    }

    /// How lines end in this file (`Byte` until known).
    pub fn unit(&self) -> LineUnit {
        self.unit.unwrap_or(LineUnit::Byte)
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
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Line>) {
        self.feed_into(chunk, &mut |l: &mut Line| out.push(take_line(l)));
    }

    /// [`LineSplitter::feed`], lending each complete line to `each`: the
    /// line's buffer is reused for the next one, so reading allocates
    /// nothing per line.
    pub fn feed_each(&mut self, chunk: &[u8], mut each: impl FnMut(&Line)) {
        self.feed_into(chunk, &mut |l: &mut Line| each(l));
    }

    /// The stream is closed (a historical file): take an unterminated last
    /// line as complete.
    pub fn finish(&mut self, out: &mut Vec<Line>) {
        self.finish_into(&mut |l: &mut Line| out.push(take_line(l)));
    }

    /// [`LineSplitter::finish`], lending the line as [`LineSplitter::feed_each`].
    pub fn finish_each(&mut self, mut each: impl FnMut(&Line)) {
        self.finish_into(&mut |l: &mut Line| each(l));
    }

    /// Where lines go: the callee may take the line's bytes; what it leaves
    /// is reused for the next line.
    fn feed_into(&mut self, mut chunk: &[u8], out: &mut impl FnMut(&mut Line)) {
        if self.unit.is_none() {
            // At offset 0: the first two bytes tell (a BOM). Fewer than two
            // so far: keep them and decide with the next chunk.
            let seen = self.pending.len().min(2);
            let mut head = self.pending[..seen].to_vec();
            head.extend(chunk.iter().take(2 - seen));
            if head.len() < 2 {
                self.push_capped(chunk);
                return;
            }
            self.unit = Some(LineUnit::from_head(&head));
            if !self.pending.is_empty() {
                // Re-feed the held byte now that the unit is known.
                let mut all = std::mem::take(&mut self.pending);
                self.pending_len = 0;
                self.pending_last = 0;
                self.tail = [0; 4];
                all.extend_from_slice(chunk);
                return self.feed_into(&all, out);
            }
        }
        if self.unit != Some(LineUnit::Byte) {
            return self.feed_utf16(chunk, out);
        }
        while !chunk.is_empty() {
            match memchr::memchr(b'\n', chunk) {
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

    fn feed_utf16(&mut self, chunk: &[u8], out: &mut impl FnMut(&mut Line)) {
        let le = self.unit == Some(LineUnit::Utf16Le);
        let base = self.offset + self.pending_len;
        let mut prev = self.pending_last;
        let mut start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            let odd = (base + i as u64) % 2 == 1;
            let lf = if le {
                prev == 0x0A && b == 0x00
            } else {
                prev == 0x00 && b == 0x0A
            };
            if odd && lf {
                self.push_capped(&chunk[start..=i]);
                self.emit_utf16(true, out);
                start = i + 1;
                prev = 0xFF;
                continue;
            }
            prev = b;
        }
        self.push_capped(&chunk[start..]);
    }

    /// Emit a UTF-16 line: `pending_len` includes its LF unit when `lf`.
    fn emit_utf16(&mut self, lf: bool, out: &mut impl FnMut(&mut Line)) {
        let le = self.unit == Some(LineUnit::Utf16Le);
        let mut bytes = std::mem::take(&mut self.pending);
        let mut content_len = self.pending_len - if lf { 2 } else { 0 };
        let t = self.tail;
        let cr = if le { [0x0D, 0x00] } else { [0x00, 0x0D] };
        let before_end = if lf { &t[..2] } else { &t[2..] };
        if content_len >= 2 && before_end == cr {
            content_len -= 2;
        }
        let too_long = if content_len > self.max_line_bytes as u64 {
            bytes.truncate(self.max_line_bytes);
            Some(content_len)
        } else {
            bytes.truncate(content_len as usize);
            None
        };
        self.lend(bytes, too_long, out);
        self.offset += self.pending_len;
        self.next_number += 1;
        self.pending_len = 0;
        self.pending_last = 0;
        self.tail = [0; 4];
    }

    fn finish_into(&mut self, out: &mut impl FnMut(&mut Line)) {
        if self.pending_len > 0 {
            if matches!(self.unit, Some(LineUnit::Utf16Le | LineUnit::Utf16Be)) {
                self.emit_utf16(false, out);
            } else {
                self.emit(false, out);
            }
        }
    }

    /// Hand the line to `out`, then keep its buffer (emptied) for the next.
    fn lend(&mut self, bytes: Vec<u8>, too_long: Option<u64>, out: &mut impl FnMut(&mut Line)) {
        let mut line = Line {
            offset: self.offset,
            number: self.next_number,
            bytes,
            too_long,
        };
        out(&mut line);
        self.pending = line.bytes;
        self.pending.clear();
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
        // The last four bytes of the line so far: the new bytes' last
        // ones, after the old tail's.
        let new = &bytes[bytes.len().saturating_sub(4)..];
        let keep = 4 - new.len();
        self.tail.copy_within(4 - keep.., 0);
        self.tail[keep..].copy_from_slice(new);
    }

    /// Emit the pending line. `pending_len` counts the content (with a CR,
    /// if any) but not the LF.
    fn emit(&mut self, lf: bool, out: &mut impl FnMut(&mut Line)) {
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
        self.lend(bytes, too_long, out);
        self.offset += self.pending_len + u64::from(lf);
        self.next_number += 1;
        self.pending_len = 0;
        self.pending_last = 0;
        self.tail = [0; 4];
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
        let chunks: Vec<&[u8]> = b"\n\r\nx\ry\n".chunks(1).collect();
        assert_eq!(split(&chunks, 100, false).0, lines);
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

    fn utf16(text: &str, le: bool) -> Vec<u8> {
        let mut v = if le {
            vec![0xFF, 0xFE]
        } else {
            vec![0xFE, 0xFF]
        };
        for u in text.encode_utf16() {
            v.extend(if le { u.to_le_bytes() } else { u.to_be_bytes() });
        }
        v
    }

    #[test]
    fn utf16_lines_split_at_whole_units_with_byte_offsets() {
        for le in [true, false] {
            // `上` is U+4E0A: a 0A byte that is no line end; `Њ` is U+040A.
            let data = utf16("a\r\n上Њ\nzz", le);
            let whole = split(&[&data], 100, false);
            let (lines, off) = &whole;
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert_eq!(lines[0].offset, 0);
            assert_eq!(lines[0].bytes.len(), 4, "BOM + a, no CR: {:?}", lines[0]);
            assert_eq!(lines[1].offset, 2 + 2 * 3);
            assert_eq!(lines[1].bytes.len(), 4);
            // The partial `zz` is not emitted; the offset stops before it.
            assert_eq!(*off, 2 + 2 * 3 + 2 * 3);
            // Byte at a time (units split across chunks) is the same.
            let chunks: Vec<&[u8]> = data.chunks(1).collect();
            assert_eq!(&split(&chunks, 100, false), &whole);
            // Half an LF unit is not a line end yet.
            let cut = utf16("x\n", le);
            let (lines, _) = split(&[&cut[..cut.len() - 1]], 100, false);
            assert!(lines.is_empty());
            // Closed: the last line counts.
            let (lines, off) = split(&[&data], 100, true);
            assert_eq!((lines.len(), lines[2].bytes.len()), (3, 4));
            assert_eq!(off, data.len() as u64);
        }
        // Resumed past the head: told by `set_unit`.
        let data = utf16("ab\ncd\n", true);
        let mut s = LineSplitter::new(100, 8, 2);
        s.set_unit(LineUnit::from_head(&data));
        let mut out = Vec::new();
        s.feed(&data[8..], &mut out);
        assert_eq!(
            (out[0].offset, out[0].number, out[0].bytes.len()),
            (8, 2, 4)
        );
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let data = b"h1\th2\r\nv1\tv2\n\nlast\r\n";
        let whole = split(&[data], 100, false);
        let chunks: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(split(&chunks, 100, false), whole);
    }
}
