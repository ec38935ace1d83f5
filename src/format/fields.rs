//! Parsing of single values other than times (`times`): amounts, yes/no
//! values, job states, counts.
//!
//! Every function returns a message that describes the value only (`"abc" is
//! not an amount`); the caller prefixes the column, so the reason a line
//! becomes a dead letter names both.

use rust_decimal::Decimal;

/// An amount as PaperCut and spreadsheets write it, exactly (no floats):
/// `-1.20`, `+1.20`, `$1.20`, `-$1.20`, `$-1.20`, `1,234.50`, `1.20 Credits`,
/// `AUD 1.20`, `1.20 AUD`, `(1.20)` (negative); with `decimal_comma`:
/// `1,20`, `1.234,50`. The scale is kept as written (`1.20` stays `1.20`).
///
/// A currency code other than `currency` is refused rather than billed in
/// the wrong currency. Grouping must be well-formed (`1,20` without
/// `decimal_comma` is refused, not read as 120).
pub fn parse_amount(raw: &str, decimal_comma: bool, currency: &str) -> Result<Decimal, String> {
    match plain_amount(super::record::trim(raw), decimal_comma) {
        Some(d) => Ok(d),
        None => general_amount(raw, decimal_comma, currency),
    }
}

/// Every accepted form of [`parse_amount`].
fn general_amount(raw: &str, decimal_comma: bool, currency: &str) -> Result<Decimal, String> {
    let bad = || format!("{:?} is not an amount", raw.trim());
    let mut s = raw.trim();
    if s.is_empty() {
        return Err("empty (a missing amount is not a free job)".into());
    }
    let mut negative = false;
    if let Some(inner) = s.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
        negative = true;
        s = inner.trim();
    }
    // Units around the number: a trailing "Credits", a currency code before
    // or after.
    for word in ["credits", "credit"] {
        if s.len() > word.len() && s.is_char_boundary(s.len() - word.len()) {
            let (head, tail) = s.split_at(s.len() - word.len());
            if tail.eq_ignore_ascii_case(word) {
                s = head.trim_end();
                break;
            }
        }
    }
    if let Some((code, rest)) = split_code(s, true) {
        check_code(code, currency, raw)?;
        s = rest;
    } else if let Some((code, rest)) = split_code(s, false) {
        check_code(code, currency, raw)?;
        s = rest;
    }
    // Sign and `$` in either order before the digits.
    let mut sign: Option<char> = None;
    let mut dollar = false;
    loop {
        match s.chars().next() {
            Some(c @ ('-' | '+' | '\u{2212}')) if sign.is_none() => {
                sign = Some(c);
                s = s[c.len_utf8()..].trim_start();
            }
            Some('$') if !dollar => {
                dollar = true;
                s = s[1..].trim_start();
            }
            _ => break,
        }
    }
    if matches!(sign, Some('-' | '\u{2212}')) {
        if negative {
            return Err(bad()); // `(-1.20)`: which sign is meant?
        }
        negative = true;
    }
    let (group, point) = if decimal_comma {
        ('.', ',')
    } else {
        (',', '.')
    };
    let (int_part, frac) = match s.split_once(point) {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let int_digits = ungroup(int_part, group).ok_or_else(bad)?;
    let mut text = if int_digits.is_empty() {
        String::from("0")
    } else {
        int_digits
    };
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        text.push('.');
        text.push_str(f);
    } else if int_part.is_empty() {
        return Err(bad());
    }
    let mut d =
        Decimal::from_str_exact(&text).map_err(|_| format!("{bad} (out of range)", bad = bad()))?;
    if negative {
        d = -d;
    }
    Ok(normalize_zero(d))
}

/// The common case of [`parse_amount`] without its copies: an optional sign,
/// digits, optionally a point and digits (`-1.20`). The general path reads
/// these to the same value: it builds the same digit string for
/// `Decimal::from_str_exact`. `None` for anything else, or out of range.
fn plain_amount(s: &str, decimal_comma: bool) -> Option<Decimal> {
    let point = if decimal_comma { b',' } else { b'.' };
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let b = digits.as_bytes();
    let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int_len == 0 {
        return None;
    }
    let text = match &b[int_len..] {
        [] => digits,
        [p, frac @ ..]
            if *p == point && !frac.is_empty() && frac.iter().all(u8::is_ascii_digit) =>
        {
            if decimal_comma {
                return None; // the general path swaps the comma for a point
            }
            digits
        }
        _ => return None,
    };
    let d = Decimal::from_str_exact(text).ok()?;
    Some(normalize_zero(if negative { -d } else { d }))
}

/// `-0.00` renders as `"-0.00"`; a zero has no sign in a bill.
pub fn normalize_zero(mut d: Decimal) -> Decimal {
    if d.is_zero() {
        d.set_sign_positive(true);
    }
    d
}

/// Split a three-letter currency code off the front (`AUD 1.20`) or the back
/// (`1.20 AUD`) of `s`.
fn split_code(s: &str, front: bool) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if b.len() < 4 {
        return None;
    }
    if front {
        let code = s.get(..3)?;
        let rest = s.get(3..)?;
        let letters = code.bytes().all(|c| c.is_ascii_alphabetic());
        // The code must end there: `AUD1.20` and `AUD 1.20`, not `AUDX`.
        let next = rest.chars().next()?;
        (letters && !next.is_ascii_alphabetic()).then(|| (code, rest.trim_start()))
    } else {
        let cut = s.len().checked_sub(3)?;
        let code = s.get(cut..)?;
        let rest = s.get(..cut)?;
        let letters = code.bytes().all(|c| c.is_ascii_alphabetic());
        let prev = rest.chars().last()?;
        (letters && !prev.is_ascii_alphabetic()).then(|| (code, rest.trim_end()))
    }
}

fn check_code(code: &str, currency: &str, raw: &str) -> Result<(), String> {
    if code.eq_ignore_ascii_case(currency) {
        Ok(())
    } else {
        Err(format!(
            "{:?} is in {}, not the source's currency {currency}",
            raw.trim(),
            code.to_ascii_uppercase()
        ))
    }
}

/// The digits of an integer part with well-formed grouping (`1,234,567`):
/// the first group 1–3 digits, every other exactly 3.
fn ungroup(s: &str, group: char) -> Option<String> {
    if !s.bytes().all(|b| b.is_ascii_digit() || b == group as u8) {
        return None;
    }
    if !s.contains(group) {
        return Some(s.to_string());
    }
    let mut parts = s.split(group);
    let first = parts.next()?;
    if first.is_empty() || first.len() > 3 {
        return None;
    }
    let mut out = first.to_string();
    for p in parts {
        if p.len() != 3 {
            return None;
        }
        out.push_str(p);
    }
    Some(out)
}

/// Which yes/no field a value is for: each also accepts its own word
/// (`DUPLEX`/`NOT DUPLEX`, `GRAYSCALE`/`NOT GRAYSCALE`), as the Print Logger
/// writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolKind {
    Duplex,
    Grayscale,
    /// A plain flag (`refunded`, `printed`…): no word of its own.
    Flag,
}

pub fn parse_bool(raw: &str, kind: BoolKind) -> Result<bool, String> {
    // The common words without an uppercased copy.
    let t = super::record::trim(raw);
    for (word, value) in [
        ("TRUE", true),
        ("FALSE", false),
        ("Y", true),
        ("N", false),
        ("YES", true),
        ("NO", false),
        ("1", true),
        ("0", false),
    ] {
        if t.eq_ignore_ascii_case(word) {
            return Ok(value);
        }
    }
    let s = t.to_ascii_uppercase();
    let words: &[&str] = match kind {
        BoolKind::Duplex => &["DUPLEX"],
        BoolKind::Grayscale => &["GRAYSCALE", "GREYSCALE", "GRAY SCALE", "GREY SCALE"],
        BoolKind::Flag => &[],
    };
    match s.as_str() {
        "TRUE" | "Y" | "YES" | "1" => return Ok(true),
        "FALSE" | "N" | "NO" | "0" => return Ok(false),
        _ => {}
    }
    for w in words {
        if s == *w {
            return Ok(true);
        }
        if let Some(rest) = s.strip_prefix("NOT") {
            let rest = rest.trim_start_matches([' ', '_', '-']);
            if rest == *w || rest.replace(['_', '-'], " ") == *w {
                return Ok(false);
            }
        }
    }
    Err(format!("{:?} is not a yes/no value", raw.trim()))
}

/// A job state as PaperCut's reports and exports write it.
pub fn parse_status(raw: &str) -> Result<crate::charge::Status, String> {
    use crate::charge::Status;
    let s = raw.trim().to_ascii_lowercase().replace(['_', '-'], " ");
    Ok(match s.as_str() {
        "charged" | "printed" | "ok" | "allowed" | "usage allowed" | "completed" | "complete"
        | "success" => Status::Charged,
        "refunded" | "refund" => Status::Refunded,
        "cancelled" | "canceled" | "cancel" | "not printed" => Status::Cancelled,
        "denied" | "usage denied" | "not allowed" | "rejected" | "blocked" => Status::Denied,
        _ => {
            return Err(format!(
                "{:?} is not a job status (charged, printed, refunded, cancelled, denied)",
                raw.trim()
            ))
        }
    })
}

/// A count (pages, copies): digits only, 0..=4294967295.
pub fn parse_count(raw: &str) -> Result<u32, String> {
    let s = super::record::trim(raw);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a whole number"));
    }
    s.parse::<u32>()
        .map_err(|_| format!("{s:?} is too large for a count"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn amounts() {
        let a = |s: &str| parse_amount(s, false, "AUD").unwrap();
        assert_eq!(a("-1.20"), d("-1.20"));
        assert_eq!(a("1.20"), d("1.20"));
        assert_eq!(a("+1.20"), d("1.20"));
        assert_eq!(a("$1.20"), d("1.20"));
        assert_eq!(a("-$1.20"), d("-1.20"));
        assert_eq!(a("- $ 1.20"), d("-1.20"));
        assert_eq!(a("$-1.20"), d("-1.20"));
        assert_eq!(a("1,234.50"), d("1234.50"));
        assert_eq!(a("1,234,567.5"), d("1234567.5"));
        assert_eq!(a("1.20 Credits"), d("1.20"));
        assert_eq!(a("-1.20 credit"), d("-1.20"));
        assert_eq!(a("AUD 1.20"), d("1.20"));
        assert_eq!(a("1.20 AUD"), d("1.20"));
        assert_eq!(a("aud1.20"), d("1.20"));
        assert_eq!(a("(1.20)"), d("-1.20"));
        assert_eq!(a("($1.20)"), d("-1.20"));
        assert_eq!(a("12"), d("12"));
        assert_eq!(a(".50"), d("0.50"));
        assert_eq!(a(" 0.15 "), d("0.15"));
        // The scale is kept as written.
        assert_eq!(a("1.20").to_string(), "1.20");
        assert_eq!(a("-0.00").to_string(), "0.00");
    }

    /// The fast path reads what the general one reads, to the same value
    /// and scale, and leaves the rest to it.
    #[test]
    fn plain_amounts_agree_with_the_general_path() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "+0",
            "0.00",
            "-0.00",
            "1.20",
            "-1.20",
            "+1.20",
            "007.50",
            "12",
            "1.",
            ".5",
            "-",
            "+",
            "--1",
            "+-1",
            "1.2.3",
            "1,20",
            "1,234",
            "1e3",
            "-1.20x",
            "99999999999999999999999999999999",
            "7.9228162514264337593543950335",
            "79228162514264337593543950336",
            "1.00000000000000000000000000001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let good = "-1234.50";
        for i in 0..good.len() {
            for c in ['0', '-', '+', '.', ',', ' ', 'x', '$'] {
                let mut v: Vec<char> = good.chars().collect();
                v[i] = c;
                cases.push(v.iter().collect());
            }
            cases.push(good[..i].to_string());
        }
        for c in &cases {
            for comma in [false, true] {
                let general = general_amount(c, comma, "AUD");
                if let Some(fast) = plain_amount(c, comma) {
                    let g = general.clone().unwrap();
                    assert_eq!((fast, fast.to_string()), (g, g.to_string()), "{c:?}");
                }
                assert_eq!(parse_amount(c, comma, "AUD"), general, "{c:?}");
            }
        }
        assert!(plain_amount("-1.20", false).is_some());
    }

    #[test]
    fn decimal_comma_amounts() {
        let a = |s: &str| parse_amount(s, true, "EUR").unwrap();
        assert_eq!(a("1,20"), d("1.20"));
        assert_eq!(a("-1,20"), d("-1.20"));
        assert_eq!(a("1.234,50"), d("1234.50"));
        assert_eq!(a("1,20 EUR"), d("1.20"));
        assert!(parse_amount("1.20", true, "EUR").is_err());
    }

    #[test]
    fn bad_amounts() {
        for bad in [
            "abc", "1,20", "1.2.3", "12,34.5", "--1", "$$1", "(-1.20)", "1.", "-", "$", "1e3",
            "0x10", "1.20 USD", "USD 1.20", "NaN", "1 .20", "½",
        ] {
            let e = parse_amount(bad, false, "AUD").unwrap_err();
            assert!(e.contains(&format!("{:?}", bad.trim())), "{bad}: {e}");
        }
        assert!(parse_amount("1.20 USD", false, "AUD")
            .unwrap_err()
            .contains("in USD, not the source's currency AUD"));
        assert!(parse_amount("", false, "AUD")
            .unwrap_err()
            .contains("empty"));
        assert!(
            parse_amount("99999999999999999999999999999999", false, "AUD")
                .unwrap_err()
                .contains("out of range")
        );
    }

    #[test]
    fn booleans() {
        use BoolKind::*;
        for (s, v) in [
            ("TRUE", true),
            ("false", false),
            ("Y", true),
            ("n", false),
            ("Yes", true),
            ("NO", false),
            ("1", true),
            ("0", false),
        ] {
            assert_eq!(parse_bool(s, Duplex), Ok(v), "{s}");
            assert_eq!(parse_bool(s, Grayscale), Ok(v), "{s}");
        }
        assert_eq!(parse_bool("DUPLEX", Duplex), Ok(true));
        assert_eq!(parse_bool("not duplex", Duplex), Ok(false));
        assert_eq!(parse_bool("NOT_DUPLEX", Duplex), Ok(false));
        assert_eq!(parse_bool("GRAYSCALE", Grayscale), Ok(true));
        assert_eq!(parse_bool("NOT GRAYSCALE", Grayscale), Ok(false));
        assert_eq!(parse_bool("Not Greyscale", Grayscale), Ok(false));
        assert!(parse_bool("GRAYSCALE", Duplex).is_err());
        assert!(parse_bool("maybe", Duplex)
            .unwrap_err()
            .contains("\"maybe\" is not a yes/no value"));
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("12"), Ok(12));
        assert_eq!(parse_count(" 0 "), Ok(0));
        assert!(parse_count("-3")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(parse_count("1.5").is_err());
        assert!(parse_count("twelve").is_err());
        assert!(parse_count("4294967296").unwrap_err().contains("too large"));
    }
}
