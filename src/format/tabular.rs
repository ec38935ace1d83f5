//! The delimited profiles: `transaction-file`, `print-log` and
//! `print-logger-csv`. They differ only in their defaults (header or
//! positions, banner, what is required); the reading is shared.

use super::columns::{self, Field, Mapping};
use super::record::{Defaults, Record};
use super::{FormatSettings, Profile};
use crate::charge::JobType;

/// How the Print Logger's first line starts, in each of its forms
/// (`PaperCut Print Logger - http://www.papercut.com/`, `… : …`, `….biz/`).
const PRINT_LOGGER_BANNER: &str = "papercut print logger";

/// A Print Logger header or record has at least the documented columns up
/// to Paper Size; a shorter line before the first record is a banner.
const PRINT_LOGGER_MIN_FIELDS: usize = 8;

fn is_print_logger_banner(text: &str) -> bool {
    let t = text.trim_start_matches(['\u{FEFF}', ' ', '"']);
    t.len() >= PRINT_LOGGER_BANNER.len()
        && t.is_char_boundary(PRINT_LOGGER_BANNER.len())
        && t[..PRINT_LOGGER_BANNER.len()].eq_ignore_ascii_case(PRINT_LOGGER_BANNER)
}

/// The contract's example order, for a transaction file without a header.
const TRANSACTION_POSITIONS: &[(Field, usize, &str, bool)] = &[
    (Field::Time, 1, "time", true),
    (Field::TransactionId, 2, "transaction_id", true),
    (Field::User, 3, "user", true),
    (Field::Account, 4, "account", true),
    (Field::Amount, 5, "amount", true),
    (Field::Balance, 6, "balance", true),
    (Field::JobType, 7, "job_type", true),
    (Field::Pages, 8, "pages", true),
    (Field::ColorPages, 9, "color_pages", true),
    (Field::Copies, 10, "copies", true),
    (Field::Duplex, 11, "duplex", true),
    (Field::Device, 12, "device", true),
    (Field::Document, 13, "document", true),
];

/// `printlog_yyyy_mm_dd.log`: the first ten fields are documented; copies,
/// cost, duplex and grayscale after them are not verified, so a line may
/// stop before them (then they are absent, and the amount is `None`).
const PRINT_LOG_POSITIONS: &[(Field, usize, &str, bool)] = &[
    (Field::Date, 1, "date", true),
    (Field::Time, 2, "time", true),
    (Field::Server, 3, "server", true),
    (Field::Device, 4, "printer", true),
    (Field::User, 5, "user", true),
    (Field::Account, 6, "account charged", true),
    (Field::Client, 7, "client", true),
    (Field::Document, 8, "document", true),
    (Field::Pages, 9, "total pages", true),
    (Field::ColorPages, 10, "total colour pages", true),
    (Field::Copies, 11, "copies", false),
    (Field::Amount, 12, "cost", false),
    (Field::Duplex, 13, "duplex", false),
    (Field::Grayscale, 14, "grayscale", false),
];

/// The Print Logger's documented header, for a file read without it.
const PRINT_LOGGER_POSITIONS: &[(Field, usize, &str, bool)] = &[
    (Field::Time, 1, "Time", true),
    (Field::User, 2, "User", true),
    (Field::Pages, 3, "Pages", true),
    (Field::Copies, 4, "Copies", true),
    (Field::Device, 5, "Printer", true),
    (Field::Document, 6, "Document Name", true),
    (Field::Client, 7, "Client", true),
    (Field::PaperSize, 8, "Paper Size", true),
    (Field::Duplex, 12, "Duplex", false),
    (Field::Grayscale, 13, "Grayscale", false),
];
const PRINT_LOGGER_EXTRA: &[(usize, &str)] =
    &[(9, "Language"), (10, "Height"), (11, "Width"), (14, "Size")];

pub fn defaults(profile: Profile) -> Defaults {
    match profile {
        // No job type column in a transaction file: `other`, not a guessed
        // `print` (the file also carries copies, scans, and manual
        // adjustments).
        Profile::TransactionFile => Defaults {
            job_type: None,
            amount_required: true,
            account_is_shared: false,
            time_optional: false,
        },
        // These files log printing only.
        Profile::PrintLog | Profile::PrintLoggerCsv => Defaults {
            job_type: Some(JobType::Print),
            amount_required: false,
            account_is_shared: false,
            time_optional: false,
        },
        // PaperCut's `time` is optional here (its default: the time the job
        // is processed).
        Profile::JobDetails => Defaults {
            job_type: Some(JobType::Print),
            amount_required: false,
            account_is_shared: false,
            time_optional: true,
        },
    }
}

/// The fields a record of this profile cannot do without.
fn required(profile: Profile) -> &'static [Field] {
    match profile {
        Profile::TransactionFile => &[Field::Time, Field::User, Field::Amount],
        _ => &[Field::Time, Field::User],
    }
}

#[derive(Debug)]
enum State {
    /// Before the first record: the header (if any) and the Print Logger's
    /// banner are still to come.
    Start { banner_skipped: bool },
    Ready {
        delimiter: u8,
        mapping: Mapping,
        /// The header line, to skip it if it is repeated (concatenated files).
        header: Option<String>,
        /// By 0-based column: whether a field's slot reads it (the others go
        /// to `extra`). Looked up per cell of every row.
        taken: Vec<bool>,
    },
    /// The header or the column settings are unusable: every record is an
    /// error naming why (rather than guessing columns).
    Broken(String),
}

pub enum Step {
    Skip,
    /// The record given to `step` holds the line's values.
    Record,
    Error(String),
}

#[derive(Debug)]
pub struct Tabular {
    state: State,
}

impl Tabular {
    pub fn new() -> Tabular {
        Tabular {
            state: State::Start {
                banner_skipped: false,
            },
        }
    }

    /// The first line could not even be decoded: when it was to be the
    /// header, the file cannot be read by column names.
    pub fn unreadable_line(&mut self, s: &FormatSettings, line_no: u64, reason: &str) {
        if s.header && matches!(self.state, State::Start { .. }) {
            self.state = State::Broken(format!(
                "the header (line {line_no}) could not be read ({reason})"
            ));
        }
    }

    /// The layout found so far (after the header): delimiter, header line,
    /// columns. Read-only, for `chargetail inspect`.
    pub fn layout(&self) -> Option<(u8, Option<&str>, &columns::Mapping)> {
        match &self.state {
            State::Ready {
                delimiter,
                mapping,
                header,
                ..
            } => Some((*delimiter, header.as_deref(), mapping)),
            _ => None,
        }
    }

    /// One non-blank decoded line; a record's values go into `rec` (the
    /// caller's, so that no record is allocated per line).
    pub fn step<'a>(
        &'a mut self,
        s: &FormatSettings,
        text: &'a str,
        line_no: u64,
        rec: &mut Record<'a>,
    ) -> Step {
        if s.profile == Profile::PrintLoggerCsv && is_print_logger_banner(text) {
            return Step::Skip;
        }
        // Leave the start state first (the record returned below borrows the
        // mapping, so the state cannot change after it is taken).
        if let State::Start { banner_skipped } = self.state {
            let delimiter = s.delimiter.unwrap_or_else(|| detect_delimiter(text));
            let started = if s.profile == Profile::PrintLoggerCsv {
                self.start_print_logger(s, text, line_no, delimiter, banner_skipped)
            } else if s.header {
                Some(self.start_with_header(s, text, line_no, delimiter))
            } else {
                match positions(s) {
                    Ok(mapping) => {
                        self.state = ready(delimiter, mapping, None);
                        None
                    }
                    Err(e) => {
                        self.state = State::Broken(e.clone());
                        Some(Step::Error(format!("no usable column layout: {e}")))
                    }
                }
            };
            if let Some(step) = started {
                return step;
            }
            // Otherwise this line is the first record: read on.
        }
        match &self.state {
            State::Broken(reason) => Step::Error(format!("no usable column layout: {reason}")),
            // Left just above.
            State::Start { .. } => Step::Skip,
            State::Ready {
                delimiter,
                mapping,
                header,
                taken,
            } => {
                if header.as_deref() == Some(text) {
                    return Step::Skip;
                }
                match row(text, *delimiter, mapping, taken, rec) {
                    Ok(()) => Step::Record,
                    Err(e) => Step::Error(e),
                }
            }
        }
    }

    /// The Print Logger's column order is fixed, whatever language its
    /// header is written in: it is read by position. Before the first
    /// record come its banner (`PaperCut Print Logger - http://…`, in any of
    /// its forms) and its header; a line whose first field is a time is a
    /// record, never taken for either.
    fn start_print_logger(
        &mut self,
        s: &FormatSettings,
        text: &str,
        line_no: u64,
        delimiter: u8,
        banner_skipped: bool,
    ) -> Option<Step> {
        let cells = super::split::split_line(text, delimiter).ok();
        let is_record = !s.header
            || cells.as_ref().is_some_and(|c| {
                c.first()
                    .is_some_and(|f| super::times::parse_datetime(f, s.timezone).is_ok())
            });
        let header = match (is_record, cells) {
            (true, _) => None,
            // Too few fields for the documented columns: another banner
            // (a translated one, a tool's title line), skipped once.
            (false, Some(c)) if c.len() < PRINT_LOGGER_MIN_FIELDS && !banner_skipped => {
                self.state = State::Start {
                    banner_skipped: true,
                };
                return Some(Step::Skip);
            }
            (false, Some(c)) if c.len() >= PRINT_LOGGER_MIN_FIELDS => Some(c),
            (false, None) if !banner_skipped => {
                self.state = State::Start {
                    banner_skipped: true,
                };
                return Some(Step::Skip);
            }
            (false, _) => {
                let why = format!(
                    "line {line_no} is neither the Print Logger's header nor a record \
                     (its first field is not a time)"
                );
                self.state = State::Broken(why.clone());
                return Some(Step::Error(why));
            }
        };
        let mapping = match print_logger_positions(s, header.as_deref()) {
            Ok(m) => m,
            Err(e) => {
                self.state = State::Broken(e.clone());
                return Some(Step::Error(format!("no usable column layout: {e}")));
            }
        };
        let is_header = header.is_some();
        self.state = ready(delimiter, mapping, is_header.then(|| text.to_string()));
        // A record: the caller reads it, now that the state is ready.
        is_header.then_some(Step::Skip)
    }

    fn start_with_header(
        &mut self,
        s: &FormatSettings,
        text: &str,
        line_no: u64,
        delimiter: u8,
    ) -> Step {
        let result = super::split::split_line(text, delimiter)
            .and_then(|cells| Ok((Mapping::from_header(&cells, &s.columns)?, cells)));
        let missing = |m: &Mapping| {
            required(s.profile)
                .iter()
                .copied()
                .find(|f| !m.slots.contains_key(f))
        };
        let mapping = match result {
            Ok((m, cells)) => match missing(&m) {
                None => m,
                Some(f) => {
                    let mut why = format!(
                        "the header (line {line_no}) has no {:?} column (looked for: {})",
                        f.name(),
                        f.looked_for()
                    );
                    if cells
                        .first()
                        .is_some_and(|c| super::times::parse_datetime(c, s.timezone).is_ok())
                    {
                        why.push_str(
                            "; it looks like a record, not a header: \
                             set header = false and give column positions",
                        );
                    }
                    self.state = State::Broken(why.clone());
                    return Step::Error(why);
                }
            },
            Err(e) => {
                let why = format!("the header (line {line_no}): {e}");
                self.state = State::Broken(why.clone());
                return Step::Error(why);
            }
        };
        self.state = ready(delimiter, mapping, Some(text.to_string()));
        Step::Skip
    }
}

fn ready(delimiter: u8, mapping: Mapping, header: Option<String>) -> State {
    let width = mapping
        .slots
        .values()
        .map(|s| s.index + 1)
        .max()
        .unwrap_or(0);
    let mut taken = vec![false; width];
    for slot in mapping.slots.values() {
        taken[slot.index] = true;
    }
    State::Ready {
        delimiter,
        mapping,
        header,
        taken,
    }
}

/// Tab if the line has one, else comma: a tab never occurs unquoted in a
/// comma-separated PaperCut file, while commas are common in tab-separated
/// ones (document names, amounts).
fn detect_delimiter(text: &str) -> u8 {
    if text.contains('\t') {
        b'\t'
    } else {
        b','
    }
}

/// The column positions of a file without a header.
fn positions(s: &FormatSettings) -> Result<Mapping, String> {
    let mut m = match s.profile {
        // The transaction file's order is only our example: a config that
        // gives positions gives all of them.
        Profile::TransactionFile if !s.columns.is_empty() => {
            Mapping::from_positions(&[], &s.columns)?
        }
        Profile::TransactionFile => Mapping::from_positions(TRANSACTION_POSITIONS, &s.columns)?,
        // Documented layouts: the config moves single fields.
        Profile::PrintLog => Mapping::from_positions(PRINT_LOG_POSITIONS, &s.columns)?,
        Profile::PrintLoggerCsv => return print_logger_positions(s, None),
        Profile::JobDetails => return Err("job-details has no columns".into()),
    };
    if let Some(f) = required(s.profile)
        .iter()
        .find(|f| !m.slots.contains_key(f))
    {
        return Err(format!(
            "columns: no position for {:?} (header = false, so every field needs one)",
            f.name()
        ));
    }
    m.width = None;
    Ok(m)
}

/// Split a row and pick its values by the mapping.
fn row<'a>(
    text: &'a str,
    delimiter: u8,
    mapping: &'a Mapping,
    taken: &[bool],
    rec: &mut Record<'a>,
) -> Result<(), String> {
    let mut cells = super::split::split_line(text, delimiter)?;
    if let Some(w) = mapping.width {
        // Trailing empty fields beyond the header are no data: the Print
        // Logger ends every row with a delimiter.
        if cells.len() > w && cells[w..].iter().all(|c| c.trim().is_empty()) {
            cells.truncate(w);
        }
        if cells.len() > w {
            return Err(format!(
                "{} fields, header has {w} (and field {} is not empty)",
                cells.len(),
                w + 1
                    + cells[w..]
                        .iter()
                        .position(|c| !c.trim().is_empty())
                        .unwrap_or(0)
            ));
        }
        if cells.len() != w {
            return Err(format!("{} fields, header has {w}", cells.len()));
        }
    }
    for (field, slot) in &mapping.slots {
        match cells.get(slot.index) {
            Some(_) => rec.set(
                *field,
                std::mem::take(&mut cells[slot.index]),
                slot.label.as_str(),
            ),
            None if slot.must_exist => {
                return Err(format!(
                    "{} fields, no {} for {:?}",
                    cells.len(),
                    slot.label,
                    field.name()
                ))
            }
            None => {}
        }
    }
    for (i, v) in cells.into_iter().enumerate() {
        if taken.get(i) == Some(&true) {
            continue;
        }
        let key = mapping
            .extra
            .get(&i)
            .cloned()
            .unwrap_or_else(|| format!("field{}", i + 1));
        rec.extra.insert(key, v.into_owned());
    }
    Ok(())
}

/// The Print Logger's fixed columns, named in errors by the file's own
/// header when there is one (whatever its language), with the config's
/// `columns` by position, or by a name of that header.
fn print_logger_positions(
    s: &FormatSettings,
    header: Option<&[std::borrow::Cow<'_, str>]>,
) -> Result<Mapping, String> {
    let mut overrides = s.columns.clone();
    if let Some(h) = header {
        for (key, r) in overrides.iter_mut() {
            if let super::ColumnRef::Name(name) = r {
                let n = columns::normalize(name);
                let i = h
                    .iter()
                    .position(|c| c.trim() == name.trim())
                    .or_else(|| h.iter().position(|c| columns::normalize(c) == n))
                    .ok_or_else(|| {
                        format!("columns.{key} = {name:?}: the header has no such column")
                    })?;
                *r = super::ColumnRef::Position(i + 1);
            }
        }
    }
    let mut m = Mapping::from_positions(PRINT_LOGGER_POSITIONS, &overrides)?;
    if let Some(h) = header {
        for slot in m.slots.values_mut() {
            if let Some(name) = h
                .get(slot.index)
                .map(|n| n.trim())
                .filter(|n| !n.is_empty())
            {
                slot.label = columns::label(name, slot.index + 1);
            }
        }
    }
    for &(pos, name) in PRINT_LOGGER_EXTRA {
        if !m.slots.values().any(|sl| sl.index == pos - 1) {
            m.extra.insert(pos - 1, name.to_string());
        }
    }
    if let Some(f) = required(s.profile)
        .iter()
        .find(|f| !m.slots.contains_key(f))
    {
        return Err(format!("columns: no position for {:?}", f.name()));
    }
    m.width = header.map(<[_]>::len);
    Ok(m)
}
