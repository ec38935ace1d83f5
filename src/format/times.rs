//! Parsing of times: a date and time in one value (the known layouts by
//! hand, the rest with chrono), a date or a time of day alone, and placing a
//! local time in the source's zone (the DST rule).
//!
//! Every function returns a message that describes the value only; the
//! caller prefixes the column.

use chrono::{
    DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike,
};
use chrono_tz::Tz;

/// Full date-and-time formats with an explicit UTC offset. RFC 3339 (`T` or a
/// space, `Z`, fractions) is tried first with chrono's own parser.
const OFFSET_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f %z",
    "%Y%m%dT%H%M%S%z",
];

/// Local (offset-less) date-and-time formats. Day/month orders such as
/// `20/11/2026` are deliberately absent: `03/04` is ambiguous, and a wrong
/// guess bills the wrong day.
const LOCAL_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y%m%dT%H%M%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%d %I:%M:%S %p",
    "%Y-%m-%d %I:%M %p",
    "%Y/%m/%d %I:%M:%S %p",
];

const DATE_FORMATS: &[&str] = &["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d"];

const TIME_FORMATS: &[&str] = &["%H:%M:%S%.f", "%H:%M", "%I:%M:%S %p", "%I:%M %p", "%H%M%S"];

/// Which of the accepted formats (chrono `strftime` syntax) reads `raw`: a
/// date and time, a date, or a time of day. For `chargetail inspect`; the
/// parsers do not use it.
pub fn time_format_of(raw: &str) -> Option<&'static str> {
    use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
    let raw = raw.trim();
    if DateTime::parse_from_rfc3339(raw).is_ok() {
        return Some("RFC 3339 (%Y-%m-%dT%H:%M:%S%.f%:z)");
    }
    let full = OFFSET_FORMATS
        .iter()
        .find(|f| DateTime::parse_from_str(raw, f).is_ok());
    full.or_else(|| {
        LOCAL_FORMATS
            .iter()
            .find(|f| NaiveDateTime::parse_from_str(raw, f).is_ok())
    })
    .or_else(|| {
        DATE_FORMATS
            .iter()
            .find(|f| NaiveDate::parse_from_str(raw, f).is_ok())
    })
    .or_else(|| {
        TIME_FORMATS
            .iter()
            .find(|f| NaiveTime::parse_from_str(raw, f).is_ok())
    })
    .copied()
}

const TIME_EXAMPLES: &str = "expected e.g. 2026-11-20 09:14:03, 2026-11-20T09:14:03+11:00, \
                             20261120T091403 or 2026-11-20 9:14:03 PM";

/// A date and time in one value. Local times are placed in `tz` (see
/// [`resolve_local`]); times with an offset keep it.
pub fn parse_datetime(raw: &str, tz: Tz) -> Result<DateTime<FixedOffset>, String> {
    let s = super::record::trim(raw);
    if s.is_empty() {
        return Err("empty, a charge needs a time".into());
    }
    let t = parse_any(s, tz).ok_or_else(|| format!("{s:?} is not a time ({TIME_EXAMPLES})"))?;
    check_year(s, t)
}

fn parse_any(s: &str, tz: Tz) -> Option<DateTime<FixedOffset>> {
    fast_datetime(s, tz).or_else(|| parse_general(s, tz))
}

/// Every accepted layout, with chrono's parsers.
fn parse_general(s: &str, tz: Tz) -> Option<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t);
    }
    for f in OFFSET_FORMATS {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t);
        }
    }
    // A trailing `Z` that RFC 3339 refused (e.g. `20261120T091403Z`).
    if let Some(local) = s.strip_suffix(['Z', 'z']) {
        if let Some(n) = parse_naive(local) {
            return Some(n.and_utc().fixed_offset());
        }
    }
    parse_naive(s).map(|n| resolve_local(n, tz))
}

/// The common layouts without chrono's format strings (a fifth of parse
/// time went to them): `YYYY-MM-DD HH:MM:SS` or with `T`, an optional
/// fraction of 1 to 9 digits, then nothing (local time, placed in `tz`),
/// `Z`/`z`, or `±HH:MM`/`±HHMM`. Anything else, or any value out of range
/// (a leap second, `24:00`), is `None` and goes to the general parsers,
/// which read every string this one accepts to the same instant.
fn fast_datetime(s: &str, tz: Tz) -> Option<DateTime<FixedOffset>> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let digits = |from: usize, n: usize| -> Option<u32> {
        let mut v = 0u32;
        for &c in b.get(from..from + n)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b' ' | b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, min, sec) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let n = end - start;
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(start, n)? * 10u32.pow(9 - n as u32);
        i = end;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let naive = date.and_hms_nano_opt(hour, min, sec, nanos)?;
    let offset_secs = match &b[i..] {
        [] => return Some(resolve_local(naive, tz)),
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [_, _, b':', _, _] => (digits(i + 1, 2)?, digits(i + 4, 2)?),
                [_, _, _, _] => (digits(i + 1, 2)?, digits(i + 3, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i32;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let offset = FixedOffset::east_opt(offset_secs)?;
    naive.and_local_timezone(offset).single()
}

/// Years chrono can parse reach ±262143; a billing record from outside
/// 1900–9999 is bad data (and would not render as RFC 3339).
pub fn check_year(s: &str, t: DateTime<FixedOffset>) -> Result<DateTime<FixedOffset>, String> {
    if (1900..=9999).contains(&chrono::Datelike::year(&t)) {
        Ok(t)
    } else {
        Err(format!("{s:?} is out of range (years 1900 to 9999)"))
    }
}

fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    LOCAL_FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

/// A calendar date on its own (the print log's first field).
pub fn parse_date(raw: &str) -> Result<NaiveDate, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty, a charge needs a date".into());
    }
    DATE_FORMATS
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(s, f).ok())
        .ok_or_else(|| format!("{s:?} is not a date (expected e.g. 2026-11-20)"))
}

/// A time of day on its own, 24-hour or 12-hour with AM/PM (`9:14:03 PM`).
pub fn parse_time_of_day(raw: &str) -> Result<NaiveTime, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty, a charge needs a time".into());
    }
    TIME_FORMATS
        .iter()
        .find_map(|f| NaiveTime::parse_from_str(s, f).ok())
        .ok_or_else(|| format!("{s:?} is not a time of day (expected e.g. 09:14:03 or 9:14:03 PM)"))
}

/// Place a local wall-clock time in `tz`.
///
/// DST rule (the same as JavaScript Temporal's `"compatible"` disambiguation):
/// - in a **gap** (the clock jumps forward, so the time never existed) the
///   offset in force just *before* the transition is used, which moves the
///   time forward by the gap: Melbourne 2026-10-04 02:30 → 03:30+11:00.
///   A job was printed at some real instant; the writer's clock simply had
///   not switched yet, so this is the reading that keeps it in order.
/// - in an **overlap** (the clock falls back, so the time happened twice)
///   the *earlier* instant is taken: Melbourne 2026-04-05 02:30 → 02:30+11:00.
///   The file gives no way to tell the two apart; the first is Temporal's
///   and most libraries' choice, so ours agrees with the billing side.
pub fn resolve_local(naive: NaiveDateTime, tz: Tz) -> DateTime<FixedOffset> {
    let hour = (naive.date(), naive.hour());
    if let Some((z, h, off)) = LAST_HOUR.get() {
        if z == tz && h == hour {
            if let Some(utc) = naive.checked_sub_offset(off) {
                return DateTime::from_naive_utc_and_offset(utc, off);
            }
        }
    }
    let t = resolve_uncached(naive, tz);
    if let Some(off) = clean_hour(naive, tz) {
        LAST_HOUR.set(Some((tz, hour, off)));
    }
    t
}

thread_local! {
    /// The offset of the last local hour resolved whole (see
    /// [`clean_hour`]): a file's records come in time order, so the next
    /// record is nearly always in the same hour, and asking the zone's
    /// tables (a search of its transitions) was a twentieth of parse time.
    static LAST_HOUR: std::cell::Cell<Option<CachedHour>> = const { std::cell::Cell::new(None) };
}

/// A zone, a local hour (its date and hour of day), and its one offset.
type CachedHour = (Tz, (NaiveDate, u32), FixedOffset);

/// The one offset of every time in `naive`'s local hour, when there is
/// one: its first and last second each exist once, with the same offset.
/// An hour holding a transition fails this (its ends differ, or one is in a
/// gap or an overlap; no zone changes offset and back within an hour), and
/// its times are resolved one by one.
fn clean_hour(naive: NaiveDateTime, tz: Tz) -> Option<FixedOffset> {
    let start = naive.date().and_hms_opt(naive.hour(), 0, 0)?;
    let end = naive.date().and_hms_opt(naive.hour(), 59, 59)?;
    match (tz.from_local_datetime(&start), tz.from_local_datetime(&end)) {
        (chrono::LocalResult::Single(a), chrono::LocalResult::Single(b))
            if a.offset().fix() == b.offset().fix() =>
        {
            Some(a.offset().fix())
        }
        _ => None,
    }
}

/// [`resolve_local`] without the hour cache.
fn resolve_uncached(naive: NaiveDateTime, tz: Tz) -> DateTime<FixedOffset> {
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => t.fixed_offset(),
        chrono::LocalResult::Ambiguous(earlier, _later) => earlier.fixed_offset(),
        chrono::LocalResult::None => {
            // The offset before the gap is the one in force a day earlier:
            // offsets span UTC-12..UTC+14, so `naive - 1 day` read as UTC is
            // always before the transition, and zones never change offset
            // twice within two days.
            let instant = naive
                .checked_sub_signed(chrono::Duration::days(1))
                .map(|before| tz.offset_from_utc_datetime(&before).fix())
                .and_then(|off| {
                    naive
                        .checked_sub_signed(chrono::Duration::seconds(off.local_minus_utc().into()))
                });
            match instant {
                Some(i) => tz.from_utc_datetime(&i).fixed_offset(),
                // Only at the ends of chrono's range, where no zone has a gap.
                None => naive.and_utc().fixed_offset(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(raw: &str, tz: Tz) -> String {
        parse_datetime(raw, tz).unwrap().to_rfc3339()
    }

    const MEL: Tz = chrono_tz::Australia::Melbourne;
    const NY: Tz = chrono_tz::America::New_York;

    #[test]
    fn time_formats() {
        assert_eq!(t("2026-11-20 09:14:03", MEL), "2026-11-20T09:14:03+11:00");
        assert_eq!(t("2026-11-20T09:14:03", MEL), "2026-11-20T09:14:03+11:00");
        assert_eq!(
            t("2026-11-20T09:14:03+11:00", NY),
            "2026-11-20T09:14:03+11:00"
        );
        assert_eq!(t("2026-11-20T09:14:03Z", MEL), "2026-11-20T09:14:03+00:00");
        assert_eq!(
            t("2026-11-20T09:14:03.250+10:00", MEL),
            "2026-11-20T09:14:03.250+10:00"
        );
        assert_eq!(
            t("2026-11-20 09:14:03.5", MEL),
            "2026-11-20T09:14:03.500+11:00"
        );
        assert_eq!(
            t("2026-11-20T09:14:03+1100", MEL),
            "2026-11-20T09:14:03+11:00"
        );
        assert_eq!(t("20261120T091403", MEL), "2026-11-20T09:14:03+11:00");
        assert_eq!(t("20261120T091403Z", MEL), "2026-11-20T09:14:03+00:00");
        assert_eq!(t("2026-11-20 9:14:03 PM", MEL), "2026-11-20T21:14:03+11:00");
        assert_eq!(t("2026-11-20 9:14:03 pm", MEL), "2026-11-20T21:14:03+11:00");
        assert_eq!(t(" 2026-06-01 09:00:00 ", MEL), "2026-06-01T09:00:00+10:00");
    }

    /// The fast path reads every string it accepts to the same instant and
    /// offset as the general parsers, and leaves the rest to them.
    #[test]
    fn fast_time_path_agrees_with_the_general_parsers() {
        let mut cases = vec![
            "2026-11-20 09:14:03".to_string(),
            "2026-11-20T09:14:03".into(),
            "2026-11-20T09:14:03Z".into(),
            "2026-11-20 09:14:03z".into(),
            "2026-11-20T09:14:03+11:00".into(),
            "2026-11-20 09:14:03-05:30".into(),
            "2026-11-20T09:14:03+1100".into(),
            "2026-11-20T09:14:03-0000".into(),
            "2026-11-20T09:14:03.5".into(),
            "2026-11-20T09:14:03.123456789+10:00".into(),
            "2026-11-20T09:14:03.1234567891+10:00".into(),
            "2026-11-20T09:14:03.+10:00".into(),
            "2026-02-29 09:14:03".into(),
            "2028-02-29 09:14:03".into(),
            "2026-04-31 09:14:03".into(),
            "2026-13-01 09:14:03".into(),
            "2026-00-01 09:14:03".into(),
            "2026-11-20 24:00:00".into(),
            "2026-11-20 23:59:60".into(),
            "2026-11-20 23:60:00".into(),
            "2026-11-20 9:14:03".into(),
            "2026-1-20 09:14:03".into(),
            "2026-11-20 09:14:03 PM".into(),
            "2026-11-20 09:14:03 +11:00".into(),
            "2026-11-20T09:14:03+24:00".into(),
            "2026-11-20T09:14:03+11:60".into(),
            "2026-11-20T09:14:03+11".into(),
            "2026-11-20t09:14:03".into(),
            "2026-11-20_09:14:03".into(),
            "+2026-11-20 09:14:03".into(),
            "0001-01-01 00:00:00".into(),
            "9999-12-31T23:59:59+14:00".into(),
            // Melbourne's gap and overlap.
            "2026-10-04 02:30:00".into(),
            "2026-04-05 02:30:00".into(),
            "2026-10-04 02:00:00".into(),
            "2026-04-05 03:00:00".into(),
        ];
        // Digits, separators and signs in every position of a good value.
        let good = "2026-11-20T09:14:03.250+11:00";
        for i in 0..good.len() {
            for c in ['0', '9', '-', ':', 'T', ' ', '+', 'Z', '.', 'x'] {
                let mut v: Vec<char> = good.chars().collect();
                v[i] = c;
                cases.push(v.iter().collect());
            }
            cases.push(good[..i].to_string());
        }
        for tz in [MEL, NY, chrono_tz::UTC, chrono_tz::Australia::Lord_Howe] {
            for c in &cases {
                let general = parse_general(c, tz);
                if let Some(fast) = fast_datetime(c, tz) {
                    assert_eq!(Some(fast), general, "{c:?} in {tz}");
                    assert_eq!(fast.offset(), general.unwrap().offset(), "{c:?} in {tz}");
                }
                assert_eq!(parse_any(c, tz), general, "{c:?} in {tz}");
            }
        }
        assert!(fast_datetime("2026-11-20 09:14:03", MEL).is_some());
        assert!(fast_datetime("2026-11-20T09:14:03.250+11:00", MEL).is_some());
    }

    #[test]
    fn twelve_hour_edges() {
        assert_eq!(
            t("2026-11-20 12:05:00 AM", MEL),
            "2026-11-20T00:05:00+11:00"
        );
        assert_eq!(
            t("2026-11-20 12:05:00 PM", MEL),
            "2026-11-20T12:05:00+11:00"
        );
        assert_eq!(
            t("2026-11-20 11:59:59 PM", MEL),
            "2026-11-20T23:59:59+11:00"
        );
        assert_eq!(t("2026-11-20 1:00:00 AM", MEL), "2026-11-20T01:00:00+11:00");
        assert!(parse_datetime("2026-11-20 13:05:00 PM", MEL).is_err());
        assert!(parse_datetime("2026-11-20 0:05:00 AM", MEL).is_err());
        let tod = |s| parse_time_of_day(s).unwrap().to_string();
        assert_eq!(tod("11:05:09 am"), "11:05:09");
        assert_eq!(tod("12:00:00 AM"), "00:00:00");
        assert_eq!(tod("12:30:15 PM"), "12:30:15");
        assert_eq!(tod("9:14:03 PM"), "21:14:03");
        assert_eq!(tod("09:14:03"), "09:14:03");
        assert!(parse_time_of_day("13:00:00 PM").is_err());
        assert!(parse_time_of_day("25:00:00").is_err());
    }

    #[test]
    fn bad_times_say_what_was_expected() {
        for bad in [
            "2026-13-01 09:00:00",
            "2026-11-31 09:00:00",
            "20/11/2026 09:00",
            "yesterday",
            "2026-11-20 09:14:03 XM",
        ] {
            let e = parse_datetime(bad, MEL).unwrap_err();
            assert!(e.contains("is not a time") && e.contains(bad), "{e}");
        }
        assert!(parse_datetime("", MEL).unwrap_err().contains("empty"));
        assert!(parse_date("2026-02-30").unwrap_err().contains("not a date"));
        for far in [
            "+262143-12-31 23:59:59",
            "-262143-01-01 00:00:00",
            "+10000-01-01 00:00:00",
            "1899-12-31 23:59:59",
        ] {
            assert!(parse_datetime(far, MEL).is_err(), "{far}");
        }
        let e = parse_datetime("1899-12-31 23:59:59", MEL).unwrap_err();
        assert!(e.contains("out of range (years 1900 to 9999)"), "{e}");
        let far = NaiveDate::MIN.and_hms_opt(0, 0, 0).unwrap();
        let _ = resolve_local(far, MEL);
        let _ = resolve_local(NaiveDate::MAX.and_hms_opt(23, 59, 59).unwrap(), MEL);
    }

    #[test]
    fn dst_gap_uses_the_offset_before_the_transition() {
        // Melbourne springs forward 2026-10-04 02:00 AEST → 03:00 AEDT.
        assert_eq!(t("2026-10-04 02:30:00", MEL), "2026-10-04T03:30:00+11:00");
        assert_eq!(t("2026-10-04 02:00:00", MEL), "2026-10-04T03:00:00+11:00");
        assert_eq!(t("2026-10-04 01:59:59", MEL), "2026-10-04T01:59:59+10:00");
        assert_eq!(t("2026-10-04 03:00:00", MEL), "2026-10-04T03:00:00+11:00");
        // New York: 2026-03-08 02:00 EST → 03:00 EDT.
        assert_eq!(t("2026-03-08 02:30:00", NY), "2026-03-08T03:30:00-04:00");
    }

    #[test]
    fn dst_overlap_takes_the_earlier_instant() {
        // Melbourne falls back 2026-04-05 03:00 AEDT → 02:00 AEST.
        assert_eq!(t("2026-04-05 02:30:00", MEL), "2026-04-05T02:30:00+11:00");
        assert_eq!(t("2026-04-05 03:00:00", MEL), "2026-04-05T03:00:00+10:00");
        // New York: 2026-11-01 02:00 EDT → 01:00 EST.
        assert_eq!(t("2026-11-01 01:30:00", NY), "2026-11-01T01:30:00-04:00");
        // An explicit offset picks the second occurrence and is kept.
        assert_eq!(
            t("2026-04-05T02:30:00+10:00", MEL),
            "2026-04-05T02:30:00+10:00"
        );
    }

    #[test]
    fn the_hour_cache_agrees_with_the_zone_every_minute_across_transitions() {
        // Every minute of the days around each zone's transitions, in order
        // (as a file is read) and back and forth between zones, cached and
        // not: the same instant and offset.
        let lord_howe: Tz = chrono_tz::Australia::Lord_Howe; // 30-minute shift
        let apia: Tz = chrono_tz::Pacific::Apia;
        let days = [
            (MEL, "2026-10-03"),
            (MEL, "2026-04-04"),
            (NY, "2026-03-07"),
            (NY, "2026-10-31"),
            (lord_howe, "2026-10-03"),
            (lord_howe, "2026-04-04"),
            (apia, "2011-12-29"),
        ];
        for (tz, day) in days {
            let start = parse_date(day).unwrap().and_hms_opt(0, 0, 0).unwrap();
            for m in 0..(3 * 24 * 60) {
                let naive =
                    start + chrono::Duration::minutes(m) + chrono::Duration::seconds(m % 60);
                let want = resolve_uncached(naive, tz);
                assert_eq!(resolve_local(naive, tz), want, "{naive} in {tz}");
                assert_eq!(resolve_local(naive, MEL), resolve_uncached(naive, MEL));
                assert_eq!(resolve_local(naive, tz).offset(), want.offset());
            }
        }
    }

    #[test]
    fn samoa_skipped_a_whole_day() {
        // 2011-12-30 never happened in Apia: UTC-10 → UTC+14.
        let apia: Tz = chrono_tz::Pacific::Apia;
        assert_eq!(t("2011-12-30 12:00:00", apia), "2011-12-31T12:00:00+14:00");
    }
}
