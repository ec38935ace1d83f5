//! `chargetail inspect`: for a file nobody documented, find the profile,
//! encoding and columns that read it, say what was seen (time format, amount
//! sign, dead letters) and suggest a `[source]` section that parses it.
//!
//! Detection tries each profile's own parser on the first lines and keeps
//! the one with the fewest errors (then the most charges, then the most
//! recognised columns). Then the whole file is parsed with the suggestion:
//! its dead letters decide the exit status.

use std::path::Path;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::config::SourceConfig;
use crate::format::{AmountSign, FormatSettings, LineParser, Parsed, Profile, TextEncoding};
use crate::source::Line;

/// Lines read to choose a profile.
const SAMPLE_LINES: usize = 500;
/// Charges and dead letters shown.
const SHOWN: usize = 5;

const PROFILES: [Profile; 4] = [
    Profile::TransactionFile,
    Profile::PrintLog,
    Profile::PrintLoggerCsv,
    Profile::JobDetails,
];

#[derive(Debug, Serialize)]
pub struct Column {
    /// 1-based.
    pub position: usize,
    /// The header's name for it, when the file has a header.
    pub name: Option<String>,
    /// The charge field, or `extra.<key>`.
    pub field: String,
}

#[derive(Debug, Serialize)]
pub struct DeadLine {
    pub line: u64,
    pub offset: u64,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub file: String,
    pub profile: &'static str,
    /// The encoding read in (`None`: only ASCII, which reads the same in all).
    pub encoding: Option<String>,
    pub delimiter: Option<String>,
    /// Lines skipped before the header/first record (a banner).
    pub banner: Vec<String>,
    pub header: Option<String>,
    pub columns: Vec<Column>,
    /// The time as written in the first record.
    pub time_sample: Option<String>,
    /// Its format (chrono `strftime` syntax), when one of the accepted ones.
    pub time_format: Option<&'static str>,
    /// The first record has no time: the time of reading is used.
    pub time_read: bool,
    /// Times carry no offset: they are read in the configured zone.
    pub times_local: bool,
    pub timezone: String,
    pub amount_sign: &'static str,
    pub positive_amounts: u64,
    pub negative_amounts: u64,
    pub charges: u64,
    pub dead_letter_count: u64,
    pub first_charges: Vec<serde_json::Value>,
    pub dead_letters: Vec<DeadLine>,
    pub warnings: Vec<String>,
    /// The suggested `[source]` section (TOML).
    pub section: String,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.dead_letter_count == 0 && self.charges > 0
    }
}

/// First lines of a file (as the source reads them).
fn sample(path: &Path, max_line: usize) -> std::io::Result<Vec<Line>> {
    let mut lines = Vec::new();
    crate::source::historical::read_lines(path, max_line, |line, _| {
        if lines.len() < SAMPLE_LINES {
            lines.push(line.clone());
        }
    })?;
    Ok(lines)
}

struct Trial {
    profile: Profile,
    charges: usize,
    errors: usize,
    mapped: usize,
}

fn settings_for(src: &SourceConfig, profile: Profile) -> Result<FormatSettings, String> {
    let mut s = src.format_settings_as(profile)?;
    if src.encoding.is_none() {
        s.encoding = TextEncoding::Auto;
    }
    Ok(s)
}

fn trial(settings: FormatSettings, lines: &[Line]) -> Trial {
    let profile = settings.profile;
    let mut p = LineParser::new(Arc::new(settings), String::new());
    let (mut charges, mut errors) = (0, 0);
    for l in lines {
        match p.parse(l) {
            Parsed::Charge(_) => charges += 1,
            Parsed::Error(_) => errors += 1,
            Parsed::Skip => {}
        }
    }
    let mapped = p.layout().map_or(0, |l| {
        l.columns
            .iter()
            .filter(|(_, f)| !f.starts_with("extra."))
            .count()
    });
    Trial {
        profile,
        charges,
        errors,
        mapped,
    }
}

/// The first charge's time read in `tz`.
fn first_time(
    mut settings: FormatSettings,
    tz: chrono_tz::Tz,
    lines: &[Line],
) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    settings.timezone = tz;
    let mut p = LineParser::new(Arc::new(settings), String::new());
    lines.iter().find_map(|l| match p.parse(l) {
        Parsed::Charge(c) if !c.time_read => Some(c.time),
        _ => None,
    })
}

fn delimiter_label(d: u8) -> String {
    match d {
        b'\t' => "tab".into(),
        _ => (d as char).to_string(),
    }
}

fn decode(enc: Option<&'static encoding_rs::Encoding>, bytes: &[u8]) -> Option<String> {
    let enc = enc.unwrap_or(encoding_rs::UTF_8);
    if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE {
        return None;
    }
    let (text, _, bad) = enc.decode(bytes);
    let t = text.trim_start_matches('\u{feff}').trim_end_matches('\r');
    (!bad && !t.contains('\0')).then(|| t.to_string())
}

/// The encoding of the sample as a whole: UTF-8 when it all is, else
/// chardetng's guess over every line.
fn guess_encoding(lines: &[Line]) -> &'static encoding_rs::Encoding {
    if lines.iter().all(|l| std::str::from_utf8(&l.bytes).is_ok()) {
        return encoding_rs::UTF_8;
    }
    let mut det = chardetng::EncodingDetector::new();
    for l in lines {
        det.feed(&l.bytes, false);
        det.feed(b"\n", false);
    }
    det.feed(b"", true);
    det.guess(None, true)
}

/// Inspect one file. `src` carries the config's settings (or the defaults).
pub fn inspect(
    src: &SourceConfig,
    file: &Path,
    max_line: usize,
    zone_configured: bool,
) -> anyhow::Result<Report> {
    use anyhow::Context;
    let canonical = std::fs::canonicalize(file).with_context(|| format!("{}", file.display()))?;
    let name = canonical.to_string_lossy().into_owned();
    let lines = sample(&canonical, max_line).with_context(|| format!("reading {name}"))?;

    let mut best: Option<Trial> = None;
    for profile in PROFILES {
        let Ok(s) = settings_for(src, profile) else {
            continue;
        };
        let t = trial(s, &lines);
        let key = |t: &Trial| {
            (
                t.charges > 0,
                std::cmp::Reverse(t.errors),
                t.charges,
                t.mapped,
            )
        };
        if best.as_ref().is_none_or(|b| key(&t) > key(b)) {
            best = Some(t);
        }
    }
    let profile = best.map_or(src.profile, |b| b.profile);
    let mut settings = settings_for(src, profile).map_err(anyhow::Error::msg)?;

    // Layout, encoding, banner, time sample: from the sample.
    let mut p = LineParser::new(Arc::new(settings.clone()), name.clone());
    let mut banner = Vec::new();
    let mut first_record: Option<Option<String>> = None;
    // The amounts as written, in the sample (`sample_sign`: positive, negative).
    let mut sample_sign = (0u64, 0u64);
    for l in &lines {
        match p.parse(l) {
            Parsed::Skip if first_record.is_none() => {
                if let Some(t) = decode(p.encoding(), &l.bytes) {
                    if !t.trim().is_empty() {
                        banner.push(t);
                    }
                }
            }
            Parsed::Charge(c) => {
                if first_record.is_none() {
                    first_record = Some(decode(p.encoding(), &l.bytes));
                }
                match c.amount.map(|a| a.cmp(&Decimal::ZERO)) {
                    // Billed negative under debit-negative: written positive.
                    Some(std::cmp::Ordering::Less) => sample_sign.0 += 1,
                    Some(std::cmp::Ordering::Greater) => sample_sign.1 += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let first_record = first_record.flatten();
    let flipped = src.amount_sign.is_none()
        && settings.amount_sign == AmountSign::DebitNegative
        && sample_sign.0 > 0
        && sample_sign.1 == 0;
    let encoding = p.encoding();
    let layout = p.layout();
    if let Some(h) = layout.as_ref().and_then(|l| l.header.as_ref()) {
        banner.retain(|b| b.trim_start_matches('\u{feff}') != h.trim_start_matches('\u{feff}'));
    }
    let header_names: Vec<String> = layout
        .as_ref()
        .and_then(|l| {
            l.header
                .as_deref()
                .and_then(|h| crate::format::split_fields(h, l.delimiter).ok())
        })
        .unwrap_or_default();
    let columns: Vec<Column> = layout.as_ref().map_or_else(Vec::new, |l| {
        l.columns
            .iter()
            .map(|(pos, field)| Column {
                position: *pos,
                name: header_names.get(pos - 1).map(|s| s.trim().to_string()),
                field: field.clone(),
            })
            .collect()
    });
    let time_sample = first_record.as_deref().and_then(|rec| match &layout {
        Some(l) => {
            let pos = l.columns.iter().find(|(_, f)| f == "time")?.0;
            let cells = crate::format::split_fields(rec, l.delimiter).ok()?;
            cells.get(pos - 1).map(|c| c.trim().to_string())
        }
        None => {
            let at = rec.find("time=")? + 5;
            Some(rec[at..].split(',').next()?.trim().to_string())
        }
    });
    let times_local = match (
        first_time(settings.clone(), chrono_tz::UTC, &lines),
        first_time(settings.clone(), chrono_tz::Pacific::Kiritimati, &lines),
    ) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };

    // The encoding to write: what auto found, when it is not UTF-8. `auto`
    // decides on the first line that is not ASCII; with the whole sample
    // the guess is better (a BOM still decides).
    let encoding = match (src.encoding, encoding) {
        (None, Some(e)) if e != encoding_rs::UTF_16LE && e != encoding_rs::UTF_16BE => {
            Some(guess_encoding(&lines))
        }
        (_, e) => e,
    };
    let enc_label = match (src.encoding, encoding) {
        (Some(e), _) => Some(e.label()),
        (None, Some(e)) if e != encoding_rs::UTF_8 => Some(TextEncoding::Fixed(e).label()),
        _ => None,
    };
    settings.encoding = match &enc_label {
        Some(l) => l.parse().map_err(anyhow::Error::msg)?,
        None => TextEncoding::default(),
    };
    let default_delim = FormatSettings::defaults(profile, "x").delimiter;
    let found_delim = layout.as_ref().map(|l| l.delimiter);
    let delim_to_write = match (found_delim, default_delim) {
        (Some(f), d) if Some(f) != d => Some(f),
        _ => None,
    };
    if let Some(d) = delim_to_write {
        settings.delimiter = Some(d);
    }
    if flipped {
        settings.amount_sign = AmountSign::ChargePositive;
    }

    // The whole file with the suggested settings.
    let settings = Arc::new(settings);
    let mut p = LineParser::new(settings.clone(), name.clone());
    let (mut charges, mut dead) = (0u64, 0u64);
    let (mut pos, mut neg) = (0u64, 0u64);
    let mut first_charges: Vec<serde_json::Value> = Vec::new();
    let mut dead_letters = Vec::new();
    crate::source::historical::read_lines(&canonical, max_line, |line, _| {
        match p.parse(line) {
            Parsed::Skip => {}
            Parsed::Charge(c) => {
                charges += 1;
                if let Some(a) = c.amount {
                    // The amount as written in the file.
                    let raw = match settings.amount_sign {
                        AmountSign::DebitNegative => -a,
                        AmountSign::ChargePositive => a,
                    };
                    if raw > Decimal::ZERO {
                        pos += 1;
                    } else if raw < Decimal::ZERO {
                        neg += 1;
                    }
                }
                if first_charges.len() < SHOWN {
                    if let Ok(v) = serde_json::from_slice(&c.to_event_json(&settings.source_name)) {
                        first_charges.push(v);
                    }
                }
            }
            Parsed::Error(reason) => {
                dead += 1;
                if dead_letters.len() < 20 {
                    dead_letters.push(DeadLine {
                        line: line.number,
                        offset: line.offset,
                        reason,
                    });
                }
            }
        }
    })
    .with_context(|| format!("reading {name}"))?;

    let mut warnings = Vec::new();
    if flipped {
        warnings.push(format!(
            "flipped sign? every amount is written positive ({} in the first lines) but {} \
             writes a debit negative, so each charge would be billed as a credit; the section \
             sets amount_sign = \"charge-positive\" (a job's cost written positive): check it",
            sample_sign.0,
            profile.as_str()
        ));
    }
    if times_local && !zone_configured {
        warnings.push(format!(
            "the times carry no offset and no zone is configured: they are read in {} \
             (the system's zone); set [source] timezone to the PaperCut server's zone",
            src.timezone
        ));
    }
    if charges == 0 {
        warnings.push("no charge could be read from the file".into());
    }

    let mut section = String::from("[source]\n");
    section.push_str(&format!("name = {}\n", toml_str(&src.name)));
    section.push_str(&format!("path = {}\n", toml_str(&name)));
    section.push_str(&format!("profile = {}\n", toml_str(profile.as_str())));
    if let Some(e) = &enc_label {
        section.push_str(&format!("encoding = {}\n", toml_str(e)));
    }
    if let Some(d) = src
        .delimiter
        .clone()
        .or(delim_to_write.map(delimiter_label))
    {
        section.push_str(&format!("delimiter = {}\n", toml_str(&d)));
    }
    if let Some(h) = src.header {
        section.push_str(&format!("header = {h}\n"));
    }
    if zone_configured {
        section.push_str(&format!("timezone = {}\n", toml_str(&src.timezone)));
    } else {
        section.push_str(&format!(
            "timezone = {}   # the system's zone: set the PaperCut server's\n",
            toml_str(&src.timezone)
        ));
    }
    section.push_str(&format!("currency = {}\n", toml_str(&src.currency)));
    if src.decimal_comma {
        section.push_str("decimal_comma = true\n");
    }
    if let Some(sign) = src.amount_sign {
        let s = match sign {
            AmountSign::DebitNegative => "debit-negative",
            AmountSign::ChargePositive => "charge-positive",
        };
        section.push_str(&format!("amount_sign = {}\n", toml_str(s)));
    } else if flipped {
        section.push_str(
            "amount_sign = \"charge-positive\"   # every amount is written positive: check\n",
        );
    }
    if !src.columns.is_empty() {
        section.push_str("[source.columns]\n");
        for (k, v) in &src.columns {
            let v = match v {
                crate::format::ColumnRef::Position(n) => n.to_string(),
                crate::format::ColumnRef::Name(s) => toml_str(s),
            };
            section.push_str(&format!("{k} = {v}\n"));
        }
    }

    Ok(Report {
        file: name,
        profile: profile.as_str(),
        encoding: encoding.map(|e| TextEncoding::Fixed(e).label()),
        delimiter: found_delim.map(delimiter_label),
        banner,
        header: layout.and_then(|l| l.header),
        columns,
        time_format: time_sample
            .as_deref()
            .and_then(crate::format::time_format_of),
        time_read: first_charges
            .first()
            .is_some_and(|c| c["data"]["time_source"] == "read"),
        time_sample,
        times_local,
        timezone: src.timezone.clone(),
        amount_sign: match settings.amount_sign {
            AmountSign::DebitNegative => "debit-negative",
            AmountSign::ChargePositive => "charge-positive",
        },
        positive_amounts: pos,
        negative_amounts: neg,
        charges,
        dead_letter_count: dead,
        first_charges,
        dead_letters,
        warnings,
        section,
    })
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The human report on `out` (stderr): everything but the section.
pub fn print_diagnostics(r: &Report, out: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(out, "{}:", r.file)?;
    writeln!(out, "  profile:   {}", r.profile)?;
    writeln!(
        out,
        "  encoding:  {}",
        r.encoding
            .as_deref()
            .unwrap_or("ascii only (reads the same in every encoding)")
    )?;
    if let Some(d) = &r.delimiter {
        writeln!(out, "  delimiter: {d}")?;
    }
    for b in &r.banner {
        writeln!(out, "  banner:    {b}")?;
    }
    if let Some(h) = &r.header {
        writeln!(out, "  header:    {h}")?;
    }
    if !r.columns.is_empty() {
        writeln!(out, "  columns:")?;
        for c in &r.columns {
            match &c.name {
                Some(n) => writeln!(out, "    {:>3} {n:?} -> {}", c.position, c.field)?,
                None => writeln!(out, "    {:>3} -> {}", c.position, c.field)?,
            }
        }
    }
    if let Some(t) = &r.time_sample {
        let how = if r.times_local {
            format!("local, no offset: read in {}", r.timezone)
        } else {
            "with its offset".into()
        };
        let format = r.time_format.unwrap_or("not one of the accepted formats");
        writeln!(out, "  time:      {t:?}, format {format} ({how})")?;
    } else if r.time_read {
        writeln!(
            out,
            "  time:      none in the first record: the time of reading is used"
        )?;
    }
    writeln!(
        out,
        "  amounts:   {} ({} written positive, {} negative)",
        r.amount_sign, r.positive_amounts, r.negative_amounts
    )?;
    writeln!(
        out,
        "  charges:   {}, dead letters: {}",
        r.charges, r.dead_letter_count
    )?;
    for c in &r.first_charges {
        writeln!(out, "    {c}")?;
    }
    for d in &r.dead_letters {
        writeln!(
            out,
            "  dead letter: {}:{}: {} (byte offset {})",
            r.file, d.line, d.reason, d.offset
        )?;
    }
    for w in &r.warnings {
        writeln!(out, "  warning: {w}")?;
    }
    Ok(())
}
