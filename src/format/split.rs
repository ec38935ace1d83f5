//! Splitting one delimited line into its fields (RFC 4180 quoting, the
//! csv crate's reading), borrowing the line wherever a field needs no
//! unescaping.

use std::borrow::Cow;

/// Split one line into fields: RFC 4180 quoting, doubled quotes, the
/// delimiter inside quotes. A quoted field cannot span lines: lines are
/// split before parsing (a record must be one line for its offset to be its
/// position), so an unterminated quote is an error here and the next line
/// is read on its own.
///
/// Fields borrow the line; only a quoted field with a doubled quote is
/// copied (to unescape it).
pub fn split_line(text: &str, delimiter: u8) -> Result<Vec<Cow<'_, str>>, String> {
    // As the csv reader did: a BOM opening the line (files joined with
    // `cat`) is not part of the first field.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut cells = Vec::with_capacity(16);
    if plain_split(text, delimiter, &mut cells) {
        return Ok(cells);
    }
    cells.clear();
    if let Some(col) = unterminated_quote(text, delimiter) {
        return Err(format!(
            "field {col} opens a quote that does not close on this line \
             (a quoted field cannot span lines)"
        ));
    }
    split_quoted(text, delimiter, &mut cells);
    Ok(cells)
}

/// Without a quote RFC 4180 is a plain split: one pass over the bytes,
/// eight at a time (`str::split` searched each short field with its own
/// `memchr` call, and a byte-at-a-time loop was a sixth of `parse` time).
/// `false`, with `cells` partly filled, when the line has a quote.
fn plain_split<'a>(text: &'a str, delimiter: u8, cells: &mut Vec<Cow<'a, str>>) -> bool {
    let b = text.as_bytes();
    let mut start = 0;
    let mut base = 0;
    let mut words = b.chunks_exact(8);
    for chunk in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        if zero_bytes(w ^ (ONES * u64::from(b'"'))) != 0 {
            return false;
        }
        let mut hits = zero_bytes(w ^ (ONES * u64::from(delimiter)));
        while hits != 0 {
            let i = base + (hits.trailing_zeros() / 8) as usize;
            // An ASCII delimiter: both ends are character boundaries.
            cells.push(Cow::Borrowed(text.get(start..i).unwrap_or_default()));
            start = i + 1;
            hits &= hits - 1;
        }
        base += 8;
    }
    for (i, &c) in words.remainder().iter().enumerate() {
        if c == delimiter {
            cells.push(Cow::Borrowed(text.get(start..base + i).unwrap_or_default()));
            start = base + i + 1;
        } else if c == b'"' {
            return false;
        }
    }
    cells.push(Cow::Borrowed(text.get(start..).unwrap_or_default()));
    true
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `w` that is zero, and no other bit (exact
/// per byte, unlike the shorter `(w - ONES) & !w` test, whose borrow can
/// mark a 0x01 byte above a zero one).
fn zero_bytes(w: u64) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    !(((w & LOW7).wrapping_add(LOW7)) | w | LOW7)
}

/// The quoted case of [`split_line`], with the csv crate's reading (which
/// it replaced: building a csv reader per line cost a quarter of parse
/// time): a quote opens a quoted field only as the field's first byte
/// (elsewhere it is data); inside, `""` is one quote and the closing quote
/// may be followed by more data up to the delimiter (`"a"b` is `ab`).
/// The caller has checked that every opened quote closes.
fn split_quoted<'a>(text: &'a str, delimiter: u8, cells: &mut Vec<Cow<'a, str>>) {
    let b = text.as_bytes();
    let mut i = 0;
    loop {
        // At the start of a field.
        let start = i;
        if b.get(i) != Some(&b'"') {
            let end = b[i..]
                .iter()
                .position(|&c| c == delimiter)
                .map_or(b.len(), |p| i + p);
            cells.push(Cow::Borrowed(&text[start..end]));
            if end == b.len() {
                return;
            }
            i = end + 1;
            continue;
        }
        // A quoted field: borrowed while it has no doubled quote and no
        // data after its closing quote.
        i += 1;
        let mut owned: Option<String> = None;
        let mut run = i;
        loop {
            match b[i..].iter().position(|&c| c == b'"') {
                Some(p) => {
                    let q = i + p;
                    if b.get(q + 1) == Some(&b'"') {
                        let o = owned.get_or_insert_with(String::new);
                        o.push_str(&text[run..=q]);
                        i = q + 2;
                        run = i;
                    } else {
                        // The closing quote; what follows up to the delimiter
                        // is data of the same field.
                        let end = b[q + 1..]
                            .iter()
                            .position(|&c| c == delimiter)
                            .map_or(b.len(), |p| q + 1 + p);
                        let cell = match (owned, q + 1 == end) {
                            (None, true) => Cow::Borrowed(&text[run..q]),
                            (o, _) => {
                                let mut o = o.unwrap_or_default();
                                o.push_str(&text[run..q]);
                                o.push_str(&text[q + 1..end]);
                                Cow::Owned(o)
                            }
                        };
                        cells.push(cell);
                        if end == b.len() {
                            return;
                        }
                        i = end + 1;
                        break;
                    }
                }
                None => {
                    // Unterminated (the caller checks): the rest is the field.
                    let mut o = owned.unwrap_or_default();
                    o.push_str(&text[run..]);
                    cells.push(Cow::Owned(o));
                    return;
                }
            }
        }
    }
}

/// The 1-based number of the field whose opening quote is never closed.
fn unterminated_quote(text: &str, delimiter: u8) -> Option<usize> {
    let b = text.as_bytes();
    let mut field = 1;
    let mut i = 0;
    let mut at_start = true;
    let mut open: Option<usize> = None;
    while i < b.len() {
        let c = b[i];
        match open {
            Some(_) => {
                if c == b'"' {
                    if b.get(i + 1) == Some(&b'"') {
                        i += 1;
                    } else {
                        open = None;
                    }
                }
            }
            None => {
                if c == delimiter {
                    field += 1;
                    at_start = true;
                    i += 1;
                    continue;
                }
                if c == b'"' && at_start {
                    open = Some(field);
                }
                at_start = false;
            }
        }
        i += 1;
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The csv crate's reading, which `split_line` replaced (a csv reader
    /// per line cost a quarter of parse time): the oracle.
    fn csv_split(text: &str, delimiter: u8) -> Vec<String> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(delimiter)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(text.as_bytes());
        let mut record = csv::StringRecord::new();
        match rdr.read_record(&mut record) {
            Ok(true) => record.iter().map(str::to_string).collect(),
            _ => vec![String::new()],
        }
    }

    #[test]
    fn splitting_agrees_with_the_csv_crate() {
        // Every line of up to 4 characters over an alphabet of the
        // characters that matter, and longer pseudo-random ones.
        let alphabet = ['a', '"', '\t', ',', '\r', ' ', '\u{FEFF}', 'é'];
        let mut lines: Vec<String> = vec![String::new()];
        let mut frontier = lines.clone();
        for _ in 0..4 {
            let mut next = Vec::new();
            for l in &frontier {
                for c in alphabet {
                    next.push(format!("{l}{c}"));
                }
            }
            lines.extend(next.iter().cloned());
            frontier = next;
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3_000 {
            let len = (x % 40) as usize;
            let mut l = String::new();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                l.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            lines.push(l);
        }
        for l in &lines {
            for d in [b'\t', b','] {
                match split_line(l, d) {
                    Ok(cells) => assert_eq!(cells, csv_split(l, d), "{l:?}"),
                    Err(_) => assert!(unterminated_quote(
                        l.strip_prefix('\u{FEFF}').unwrap_or(l),
                        d
                    )
                    .is_some()),
                }
            }
        }
    }

    #[test]
    fn zero_bytes_marks_exactly_the_zero_bytes() {
        for w in [
            0u64,
            1,
            0x0100,
            0x0001_0000_0100_0001,
            u64::MAX,
            0x8000_0000_0000_0080,
        ] {
            let want: u64 = (0..8)
                .filter(|k| (w >> (8 * k)) & 0xFF == 0)
                .map(|k| 0x80u64 << (8 * k))
                .sum();
            assert_eq!(zero_bytes(w), want, "{w:#x}");
        }
    }

    #[test]
    fn splitting_quotes_and_delimiters() {
        assert_eq!(split_line("a\tb\t", b'\t').unwrap(), vec!["a", "b", ""]);
        assert_eq!(
            split_line("\"a\tb\"\t\"say \"\"hi\"\"\"\tc", b'\t').unwrap(),
            vec!["a\tb", "say \"hi\"", "c"]
        );
        assert_eq!(
            split_line("x,\"1,234.50\",y", b',').unwrap(),
            vec!["x", "1,234.50", "y"]
        );
        assert_eq!(split_line("a\rb\tc", b'\t').unwrap(), vec!["a\rb", "c"]);
        assert_eq!(split_line("", b'\t').unwrap(), vec![""]);
        let e = split_line("a\t\"open\tc", b'\t').unwrap_err();
        assert!(
            e.contains("field 2") && e.contains("cannot span lines"),
            "{e}"
        );
        // A quote inside an unquoted field is data.
        assert_eq!(
            split_line("12\" roll\tx", b'\t').unwrap(),
            vec!["12\" roll", "x"]
        );
    }
}
