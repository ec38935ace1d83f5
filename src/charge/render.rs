//! The CloudEvents message of a charge, written by hand into a reused
//! buffer: serde_json's `Serialize` machinery, the `String` per decimal and
//! per time, and a `Vec` per message were a third of `parse` time. The bytes
//! are exactly what `serde_json::to_vec` wrote for the structs it replaced
//! (field order, `null` for an absent value, the same string escapes); the
//! tests keep that serializer as the oracle.

use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, Timelike};

use super::ChargeView;

/// Append the message of `charge` to `out`.
pub(super) fn write_event(out: &mut Vec<u8>, c: &ChargeView<'_>, source_name: &str) {
    out.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":");
    string(out, c.id);
    out.extend_from_slice(b",\"source\":\"papercut/");
    escaped(out, source_name);
    out.extend_from_slice(b"\",\"type\":\"papercut.charge\",\"subject\":");
    string(out, c.account);
    out.extend_from_slice(b",\"time\":\"");
    time(out, &c.time);
    out.extend_from_slice(b"\",\"datacontenttype\":\"application/json\",\"data\":{\"user\":");
    string(out, c.user);
    out.extend_from_slice(b",\"account\":");
    string(out, c.account);
    out.extend_from_slice(b",\"account_type\":\"");
    out.extend_from_slice(c.account_type.as_str().as_bytes());
    out.extend_from_slice(b"\",\"amount\":");
    decimal(out, c.amount.as_ref());
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(c.status.as_str().as_bytes());
    out.push(b'"');
    if let Some(cost) = &c.cost {
        out.extend_from_slice(b",\"cost\":");
        decimal(out, Some(cost));
    }
    out.extend_from_slice(b",\"currency\":");
    string(out, c.currency);
    out.extend_from_slice(b",\"job_type\":\"");
    out.extend_from_slice(c.job_type.as_str().as_bytes());
    out.push(b'"');
    if let Some(raw) = c.job_type_raw {
        out.extend_from_slice(b",\"job_type_raw\":");
        string(out, raw);
    }
    out.extend_from_slice(b",\"pages\":");
    count(out, c.pages);
    out.extend_from_slice(b",\"color_pages\":");
    count(out, c.color_pages);
    out.extend_from_slice(b",\"copies\":");
    count(out, c.copies);
    out.extend_from_slice(b",\"duplex\":");
    flag(out, c.duplex);
    out.extend_from_slice(b",\"grayscale\":");
    flag(out, c.grayscale);
    for (key, value) in [
        (&b",\"device\":"[..], c.device),
        (b",\"server\":", c.server),
        (b",\"client\":", c.client),
        (b",\"document\":", c.document),
        (b",\"paper_size\":", c.paper_size),
        (b",\"comment\":", c.comment),
        (b",\"transaction_id\":", c.transaction_id),
    ] {
        out.extend_from_slice(key);
        match value {
            Some(v) => string(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"balance_after\":");
    decimal(out, c.balance_after.as_ref());
    out.extend_from_slice(b",\"extra\":{");
    for (i, (k, v)) in c.extra.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    out.extend_from_slice(b"},\"origin\":{\"file\":");
    string(out, c.file);
    out.extend_from_slice(b",\"offset\":");
    integer(out, c.offset);
    out.extend_from_slice(b",\"line\":");
    integer(out, c.line);
    out.push(b'}');
    if c.time_read {
        out.extend_from_slice(b",\"time_source\":\"read\"");
    }
    out.extend_from_slice(b"}}");
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escaped(out, s);
    out.push(b'"');
}

/// serde_json's escapes: `"` and `\`, the short forms of backspace, form
/// feed, LF, CR and tab, `\u00XX` (lowercase hex) for the other control
/// characters; everything else (DEL, non-ASCII) as is.
///
/// Nearly every value needs no escape: eight bytes at a time are checked
/// for one (the per-byte loop was a tenth of `parse` time) and a clean
/// string is copied whole. The bytes after the last whole word are checked
/// as one word too (a byte loop over them was a third of this function).
fn escaped(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if !any_needs_escape(b) {
        out.extend_from_slice(b);
        return;
    }
    let first = b.iter().position(|&c| needs_escape(c)).unwrap_or(b.len());
    escaped_from(out, b, first);
}

/// Whether any byte of `b` needs an escape, a word at a time: a string
/// shorter than a word is padded with a byte that needs none, and the
/// remainder of a longer one is checked as its last eight bytes (they
/// overlap bytes already checked, which changes nothing).
fn any_needs_escape(b: &[u8]) -> bool {
    let word = |chunk: &[u8]| {
        let mut w = [b'a'; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        u64::from_le_bytes(w)
    };
    if b.len() < 8 {
        return word_needs_escape(word(b));
    }
    let mut words = b.chunks_exact(8);
    if words.any(|chunk| word_needs_escape(word(chunk))) {
        return true;
    }
    !words.remainder().is_empty() && word_needs_escape(word(&b[b.len() - 8..]))
}

fn needs_escape(c: u8) -> bool {
    c < 0x20 || c == b'"' || c == b'\\'
}

/// Whether any of the eight bytes is below 0x20, `"` or `\` (the classic
/// "has a byte less than n" and "has a zero byte" bit tricks, exact as a
/// yes/no for the whole word).
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let bs = w ^ (ONES * u64::from(b'\\'));
    let backslash = bs.wrapping_sub(ONES) & !bs;
    (below | quote | backslash) & HIGH != 0
}

/// The escaping loop, from `first` (the first byte needing an escape).
fn escaped_from(out: &mut Vec<u8>, b: &[u8], first: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&b[..first]);
    let mut run = first;
    for (i, &c) in b.iter().enumerate().skip(first) {
        if !needs_escape(c) {
            continue;
        }
        out.extend_from_slice(&b[run..i]);
        run = i + 1;
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xF)],
            ]),
        }
    }
    out.extend_from_slice(&b[run..]);
}

fn decimal(out: &mut Vec<u8>, d: Option<&rust_decimal::Decimal>) {
    match d {
        // Digits, a point and a sign: nothing to escape.
        Some(d) => {
            out.push(b'"');
            decimal_digits(out, d);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// A decimal as its `Display` writes it (which went through the formatting
/// machinery): the sign when negative (even of a zero), the mantissa's
/// digits with the point `scale` digits from the right, a `0` before a
/// leading point.
fn decimal_digits(out: &mut Vec<u8>, d: &rust_decimal::Decimal) {
    if d.is_sign_negative() {
        out.push(b'-');
    }
    let scale = d.scale() as usize;
    // Up to 96 bits: 29 digits, and a scale of at most 28.
    let mut digits = [b'0'; 40];
    let mut n = 0;
    let mut m = d.mantissa().unsigned_abs();
    while m > u128::from(u64::MAX) {
        digits[n] = b'0' + (m % 10) as u8;
        m /= 10;
        n += 1;
    }
    let mut m = m as u64;
    while m != 0 {
        digits[n] = b'0' + (m % 10) as u8;
        m /= 10;
        n += 1;
    }
    n = n.max(scale);
    if n == 0 {
        out.push(b'0');
        return;
    }
    let whole = n - scale;
    if whole == 0 {
        out.push(b'0');
    }
    for i in 0..n {
        if i == whole {
            out.push(b'.');
        }
        out.push(digits[n - 1 - i]);
    }
}

fn count(out: &mut Vec<u8>, n: Option<u32>) {
    match n {
        Some(n) => integer(out, u64::from(n)),
        None => out.extend_from_slice(b"null"),
    }
}

fn flag(out: &mut Vec<u8>, b: Option<bool>) {
    out.extend_from_slice(match b {
        Some(true) => b"true",
        Some(false) => b"false",
        None => b"null",
    });
}

fn integer(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// RFC 3339 as chrono's `to_rfc3339_opts(SecondsFormat::AutoSi, true)`
/// writes it: a fraction of 3, 6 or 9 digits only when there is one, `Z`
/// for UTC. The rare cases (a year outside 0–9999, a leap second, an
/// offset with seconds) are left to chrono itself.
fn time(out: &mut Vec<u8>, t: &DateTime<FixedOffset>) {
    let local = t.naive_local();
    let offset = t.offset().local_minus_utc();
    let nanos = local.nanosecond();
    if !(0..=9999).contains(&local.year()) || nanos >= 1_000_000_000 || offset % 60 != 0 {
        out.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
        return;
    }
    let two = |out: &mut Vec<u8>, n: u32| {
        out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8])
    };
    let year = local.year() as u32;
    two(out, year / 100);
    two(out, year % 100);
    out.push(b'-');
    two(out, local.month());
    out.push(b'-');
    two(out, local.day());
    out.push(b'T');
    two(out, local.hour());
    out.push(b':');
    two(out, local.minute());
    out.push(b':');
    two(out, local.second());
    if nanos != 0 {
        let (digits, value) = if nanos.is_multiple_of(1_000_000) {
            (3, nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            (6, nanos / 1_000)
        } else {
            (9, nanos)
        };
        out.push(b'.');
        let mut buf = [b'0'; 9];
        let mut v = value;
        for slot in buf[..digits].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..digits]);
    }
    if offset == 0 {
        out.push(b'Z');
        return;
    }
    out.push(if offset < 0 { b'-' } else { b'+' });
    let minutes = offset.unsigned_abs() / 60;
    two(out, minutes / 60);
    out.push(b':');
    two(out, minutes % 60);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use chrono::TimeZone;
    use rust_decimal::Decimal;

    use crate::charge::{AccountType, Charge, JobType, Origin, Status};

    fn base() -> Charge {
        Charge {
            id: "chg_0123".into(),
            time: FixedOffset::east_opt(11 * 3600)
                .unwrap()
                .with_ymd_and_hms(2026, 11, 20, 9, 14, 3)
                .unwrap(),
            user: "maya".into(),
            account: "Acme".into(),
            account_type: AccountType::Shared,
            amount: Some(Decimal::from_str("1.20").unwrap()),
            status: Status::Charged,
            cost: None,
            currency: "AUD".into(),
            job_type: JobType::Print,
            job_type_raw: None,
            pages: Some(3),
            color_pages: None,
            copies: Some(1),
            duplex: Some(true),
            grayscale: None,
            device: Some("l2-mfd".into()),
            server: None,
            client: None,
            document: Some("Q4.pdf".into()),
            paper_size: None,
            comment: None,
            transaction_id: Some("tx-1".into()),
            balance_after: None,
            extra: BTreeMap::new(),
            origin: Origin {
                file: "/var/log/pc.log".into(),
                offset: 0,
                line: 1,
            },
            time_read: false,
        }
    }

    use chrono::FixedOffset;

    /// The word test says yes exactly when a byte of the word needs an
    /// escape: every byte value in every lane, and pseudo-random words.
    #[test]
    fn word_test_agrees_with_the_byte_test() {
        let by_bytes = |w: u64| w.to_le_bytes().iter().any(|&c| super::needs_escape(c));
        let mut words = Vec::new();
        for lane in 0..8 {
            for c in 0..=255u64 {
                words.push((0x4141_4141_4141_4141 & !(0xFF << (lane * 8))) | (c << (lane * 8)));
                words.push((0xE9E9_E9E9_E9E9_E9E9 & !(0xFF << (lane * 8))) | (c << (lane * 8)));
            }
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            words.push(x);
        }
        for w in words {
            assert_eq!(super::word_needs_escape(w), by_bytes(w), "{w:#018x}");
        }
        // Strings of every length with the escape at every place.
        for len in 0..40 {
            for at in 0..len {
                for c in ['"', '\\', '\n', '\u{1}', 'é'] {
                    let mut t: String = "a".repeat(len);
                    t.replace_range(at..=at, &c.to_string());
                    let mut out = Vec::new();
                    super::escaped(&mut out, &t);
                    let want = serde_json::to_string(&t).unwrap();
                    assert_eq!(out, want.as_bytes()[1..want.len() - 1], "{t:?}");
                }
            }
        }
    }

    #[test]
    fn decimals_render_as_display() {
        let mut values: Vec<Decimal> = [
            "0",
            "-0",
            "0.00",
            "-0.00",
            "1",
            "-1",
            "1.20",
            "-1.20",
            "0.05",
            "-0.000001",
            "10",
            "1000000",
            "123456789.123456789",
            "0.0000000000000000000000000001",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "7.9228162514264337593543950335",
            "18446744073709551615",
            "18446744073709551616",
        ]
        .iter()
        .map(|s| Decimal::from_str(s).unwrap())
        .collect();
        values.push(Decimal::MAX);
        values.push(Decimal::MIN);
        values.push(Decimal::new(-5, 28));
        let mut zero = Decimal::new(0, 3);
        zero.set_sign_negative(true);
        values.push(zero);
        for v in values {
            let mut out = Vec::new();
            super::decimal_digits(&mut out, &v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }

    /// Every kind of value in every slot renders as serde_json rendered it.
    #[test]
    fn renders_what_serde_json_rendered() {
        let mut texts: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "Menu – Café Sète.pdf".into(),
            "say \"hi\" \\ back/slash".into(),
            "\u{7f}\u{80}\u{FEFF}😀".into(),
        ];
        texts.push((0u8..0x20).map(char::from).collect());
        let decimals = ["0", "1.20", "-0.05", "123456789.123456789", "-7", "0.000"];
        let mut cases = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let mut c = base();
            c.user = t.clone();
            c.account = texts[(i + 1) % texts.len()].clone();
            c.id = t.clone();
            c.currency = t.clone();
            c.device = Some(t.clone());
            c.comment = (i % 2 == 0).then(|| t.clone());
            c.job_type_raw = (i % 3 == 0).then(|| t.clone());
            c.job_type = [JobType::Other, JobType::Copy, JobType::Scan, JobType::Fax][i % 4];
            c.status = [Status::Refunded, Status::Cancelled, Status::Denied][i % 3];
            c.account_type = AccountType::Personal;
            c.extra
                .insert(t.clone(), texts[(i + 2) % texts.len()].clone());
            c.extra.insert(format!("k{i}"), "v".into());
            c.origin.file = t.clone();
            c.origin.offset = u64::MAX >> i;
            c.origin.line = i as u64 * 1_000_003;
            c.time_read = i % 2 == 1;
            c.pages = (i % 2 == 0).then_some(u32::MAX);
            c.color_pages = Some(0);
            c.duplex = [None, Some(false), Some(true)][i % 3];
            c.grayscale = [Some(true), None, Some(false)][i % 3];
            c.amount = (i % 4 != 3).then(|| Decimal::from_str(decimals[i % 6]).unwrap());
            c.cost = (i % 2 == 0).then(|| Decimal::from_str(decimals[(i + 1) % 6]).unwrap());
            c.balance_after = Some(Decimal::from_str(decimals[(i + 2) % 6]).unwrap());
            for f in [
                &mut c.server,
                &mut c.client,
                &mut c.paper_size,
                &mut c.transaction_id,
            ] {
                *f = (i % 2 == 1).then(|| t.clone());
            }
            cases.push((c, t.clone()));
        }
        // Times: fractions of every length, offsets either side, UTC, and
        // the cases left to chrono (leap second, an offset with seconds,
        // years out of 0–9999).
        let mut times = Vec::new();
        for (secs, nanos) in [
            (0, 0),
            (0, 1),
            (0, 10),
            (0, 1_000),
            (0, 120_000),
            (0, 1_000_000),
            (0, 250_000_000),
            (0, 999_999_999),
            (0, 1_500_000_000),
        ] {
            for off in [
                0,
                60,
                -60,
                11 * 3600,
                -(5 * 3600 + 30 * 60),
                14 * 3600,
                9 * 3600 + 39 * 60 + 52,
            ] {
                let o = FixedOffset::east_opt(off).unwrap();
                let naive = chrono::NaiveDate::from_ymd_opt(2026, 2, 3)
                    .unwrap()
                    .and_hms_nano_opt(23, 59, 59 - secs, nanos)
                    .unwrap();
                times.push(o.from_local_datetime(&naive).unwrap());
            }
        }
        for y in [0, 1, 999, 1900, 9999, 10_000, -1] {
            let naive = chrono::NaiveDate::from_ymd_opt(y, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap();
            times.push(
                FixedOffset::east_opt(3600)
                    .unwrap()
                    .from_local_datetime(&naive)
                    .unwrap(),
            );
        }
        for t in times {
            let mut c = base();
            c.time = t;
            cases.push((c, "pc-main".into()));
        }
        let mut buf = Vec::new();
        for (c, source) in &cases {
            let want = c.to_event_json_serde(source);
            assert_eq!(
                String::from_utf8_lossy(&c.to_event_json(source)),
                String::from_utf8_lossy(&want)
            );
            // Appended after what the buffer already holds.
            buf.clear();
            buf.extend_from_slice(b"x");
            c.write_event_json(source, &mut buf);
            assert_eq!(&buf[1..], &want[..]);
        }
    }
}
