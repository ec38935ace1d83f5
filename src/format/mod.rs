//! Format stage: turn one line of a PaperCut file into a `Charge`, following
//! the configured profile (the input profiles and their columns are listed
//! in `Profile` and `FIELD_NAMES`; each profile's parser says what it takes).
//!
//! A `LineParser` is made per file generation and fed every line of that
//! file in order from its first line, because per-file state lives here: the
//! header (column names), a banner line, and the ordinal of each record among
//! identical ones (part of the charge id).
//!
//! Parts: `times` (time values and the DST rule), `fields` (amount,
//! yes/no, status and count values),
//! `columns` (header names and aliases, positions), `split` (a line into
//! its fields),
//! `record` (raw values → charge fields, the same for every profile),
//! `tabular` (transaction-file, print-log, print-logger-csv), `job_details`.
//!
//! Decisions worth knowing:
//! - Nothing is invented: an empty value is `None`; a missing amount is an
//!   error where the file has an amount column (it is not a free job) and
//!   `None` where the file has none (Print Logger CSV, a short print log).
//! - A transaction file without a job type says nothing about the job, so
//!   the charge is `other` with no raw value; the print logs and job details
//!   only log printing, so there it is `print`.
//! - A line is a record: a quoted field cannot span lines (an unclosed quote
//!   is an error for that line), so every record has one offset.
//! - A header that cannot be used (a required column missing, a config
//!   column that is not in it) makes the header line and every record an
//!   error saying why, rather than a guess at the columns.
//! - Only a BOM at offset 0 is removed from a line's content (the bytes its
//!   id is made of); one at the start of a later line (files joined with
//!   `cat`) is ignored when splitting fields but stays in the content.

mod columns;
pub mod encoding;
mod fields;
mod job_details;
mod record;
mod split;
mod tabular;
mod times;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::charge::{Charge, ChargeId, ChargeView, OrdinalCounter};
use crate::source::Line;
use record::Record;

pub use fields::parse_amount;
pub use times::{parse_datetime, resolve_local, time_format_of};

/// The input profiles of the contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// PaperCut's Transaction to File gateway (our documented assumption).
    #[default]
    TransactionFile,
    /// NG/MF `printlog_yyyy_mm_dd.log`: tab-separated, no header.
    PrintLog,
    /// PaperCut Print Logger CSV: a banner line, then a header.
    PrintLoggerCsv,
    /// `name=value,...` of the Web Services `processJob` call.
    JobDetails,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::TransactionFile => "transaction-file",
            Profile::PrintLog => "print-log",
            Profile::PrintLoggerCsv => "print-logger-csv",
            Profile::JobDetails => "job-details",
        }
    }
}

pub use encoding::TextEncoding;

/// How the file writes a charge's sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AmountSign {
    /// PaperCut's transaction log: a debit is `-1.20`, billed as `1.20`; a
    /// positive amount (a refund/credit) is billed as negative.
    DebitNegative,
    /// A job's cost written positive for a charge.
    ChargePositive,
}

/// Where a field's value is: a header name, or a 1-based column position.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ColumnRef {
    Position(usize),
    Name(String),
}

/// Every charge field a column can be mapped to.
pub const FIELD_NAMES: &[&str] = &[
    "time",
    "date",
    "transaction_id",
    "user",
    "account",
    "account_type",
    "amount",
    "balance",
    "job_type",
    "pages",
    "color_pages",
    "copies",
    "duplex",
    "grayscale",
    "device",
    "server",
    "client",
    "document",
    "paper_size",
    "comment",
    "status",
    "refunded",
    "cancelled",
    "printed",
    "usage_allowed",
    "denied",
];

/// `"\t"`, `"tab"`, `","`, `";"`, `"|"` … → the byte.
pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "\t" | "\\t" | "tab" | "TAB" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
            Ok(s.as_bytes()[0])
        }
        _ => Err(format!(
            "{s:?} is not a single-character delimiter (use \"tab\", \",\", \";\" or \"|\")"
        )),
    }
}

/// Everything a parser needs: a profile's defaults with the source's
/// overrides applied (the config builds it: `SourceConfig::format_settings`).
#[derive(Debug, Clone)]
pub struct FormatSettings {
    pub profile: Profile,
    /// Part of every charge id and of the event's `source`.
    pub source_name: String,
    /// `None`: detect tab or comma from the header (or the first line).
    pub delimiter: Option<u8>,
    /// Whether the first line (after a banner) is a header.
    pub header: bool,
    pub columns: BTreeMap<String, ColumnRef>,
    pub encoding: TextEncoding,
    pub amount_sign: AmountSign,
    pub decimal_comma: bool,
    pub currency: String,
    pub timezone: chrono_tz::Tz,
}

impl FormatSettings {
    /// A profile's defaults alone (no config): UTC, USD, as the config's
    /// own defaults. For tests and tools that parse without a config.
    pub fn defaults(profile: Profile, source_name: &str) -> FormatSettings {
        FormatSettings {
            profile,
            source_name: source_name.to_string(),
            delimiter: match profile {
                Profile::TransactionFile => None,
                Profile::PrintLog => Some(b'\t'),
                Profile::PrintLoggerCsv | Profile::JobDetails => Some(b','),
            },
            header: match profile {
                Profile::TransactionFile | Profile::PrintLoggerCsv => true,
                Profile::PrintLog | Profile::JobDetails => false,
            },
            columns: BTreeMap::new(),
            encoding: TextEncoding::default(),
            amount_sign: match profile {
                Profile::TransactionFile => AmountSign::DebitNegative,
                _ => AmountSign::ChargePositive,
            },
            decimal_comma: false,
            currency: "USD".to_string(),
            timezone: chrono_tz::UTC,
        }
    }
}

/// A delimited file's layout as found by its parser.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub delimiter: u8,
    /// The header line, when the file has one.
    pub header: Option<String>,
    /// 1-based column → the field it became (`extra.<key>` when kept under
    /// `extra`).
    pub columns: Vec<(usize, String)>,
}

/// The fields of one delimited line (quotes honoured), for tools.
pub fn split_fields(text: &str, delimiter: u8) -> Result<Vec<String>, String> {
    split::split_line(text, delimiter).map(|v| v.into_iter().map(|c| c.into_owned()).collect())
}

/// What one line turned out to be. `C` is what a charge became:
/// the owned `Charge` from [`LineParser::parse`], whatever the caller made
/// of its view with [`LineParser::parse_with`].
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<C = Box<Charge>> {
    /// Not a record: a header, a banner, a blank line.
    Skip,
    Charge(C),
    /// Not parseable; `reason` says why (the line's place is known to the
    /// caller). Becomes a dead letter; reading goes on.
    Error(String),
}

/// Parses the lines of one file, in order, from its first line.
pub struct LineParser {
    settings: Arc<FormatSettings>,
    file: String,
    ordinals: OrdinalCounter,
    /// Header/banner/column state of the delimited profiles.
    table: tabular::Tabular,
    decoder: encoding::Decoder,
}

impl LineParser {
    /// `file` is the canonical path written into each charge's origin.
    pub fn new(settings: Arc<FormatSettings>, file: String) -> LineParser {
        LineParser {
            file,
            ordinals: OrdinalCounter::default(),
            table: tabular::Tabular::new(),
            decoder: encoding::Decoder::new(settings.encoding),
            settings,
        }
    }

    /// The encoding this file is read in (`None`: `auto` has seen only
    /// ASCII so far, which reads the same in every encoding).
    pub fn encoding(&self) -> Option<&'static encoding_rs::Encoding> {
        self.decoder.encoding()
    }

    /// The columns this file was found to have (delimited profiles, once
    /// the header or first record is read): for `chargetail inspect`.
    pub fn layout(&self) -> Option<Layout> {
        let (delimiter, header, mapping) = self.table.layout()?;
        let mut columns: Vec<(usize, String)> = mapping
            .slots
            .iter()
            .map(|(f, slot)| (slot.index + 1, f.name().to_string()))
            .collect();
        columns.extend(
            mapping
                .extra
                .iter()
                .map(|(i, key)| (i + 1, format!("extra.{key}"))),
        );
        columns.sort();
        Some(Layout {
            delimiter,
            header: header.map(str::to_string),
            columns,
        })
    }

    /// One line of the file (never panics, whatever the bytes).
    pub fn parse(&mut self, line: &Line) -> Parsed {
        self.parse_with(line, |c| Box::new(c.to_charge()))
    }

    /// [`LineParser::parse`], handing the charge to `f` as a view that
    /// borrows the line (to render its message without owning its text).
    pub fn parse_with<C>(
        &mut self,
        line: &Line,
        f: impl FnOnce(&ChargeView<'_>) -> C,
    ) -> Parsed<C> {
        // Disjoint borrows: the record borrows the table while the rest is used.
        let LineParser {
            settings: s,
            file,
            ordinals,
            table,
            decoder,
        } = self;
        let s: &FormatSettings = s;
        if let Some(n) = line.too_long {
            let why = format!(
                "line is {n} bytes, over the limit of {} bytes",
                line.bytes.len()
            );
            table.unreadable_line(s, line.number, &why);
            return Parsed::Error(why);
        }
        let (content, text, newly) = decoder.decode(&line.bytes, line.offset == 0);
        if newly {
            tracing::info!(
                file = %file,
                line = line.number,
                encoding = decoder.encoding().map_or("?", |e| e.name()),
                "encoding detected (source.encoding = \"auto\")"
            );
        }
        let text = match text {
            Ok(t) => t,
            Err(why) => {
                table.unreadable_line(s, line.number, &why);
                return Parsed::Error(why);
            }
        };
        // The splitter strips CRLF; a CR left at the end (a last line
        // without LF) is still a line end, not data.
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if record::trim(text).is_empty() {
            return Parsed::Skip;
        }
        let defaults = tabular::defaults(s.profile);
        let now = || read_time(s.timezone);
        let mut rec = Record::default();
        let d = match s.profile {
            Profile::JobDetails => match job_details::step(s, text, defaults) {
                Ok((r, d)) => {
                    rec = r;
                    d
                }
                Err(e) => return Parsed::Error(e),
            },
            _ => match table.step(s, text, line.number, &mut rec) {
                tabular::Step::Skip => return Parsed::Skip,
                tabular::Step::Error(e) => return Parsed::Error(e),
                tabular::Step::Record => defaults,
            },
        };
        let fields = match rec.build(s, d, now) {
            Ok(f) => f,
            Err(e) => return Parsed::Error(e),
        };
        // Only records without a native id take an ordinal: ids from a
        // transaction id must not depend on their neighbours.
        let id = match fields.transaction_id {
            Some(tx) => ChargeId::new(&s.source_name, Some(tx), content, 0),
            None => {
                let ordinal = ordinals.next(content);
                ChargeId::new(&s.source_name, None, content, ordinal)
            }
        };
        Parsed::Charge(f(&ChargeView {
            id: id.as_str(),
            time: fields.time,
            user: fields.user,
            account: fields.account,
            account_type: fields.account_type,
            amount: fields.amount,
            status: fields.status,
            cost: fields.cost,
            currency: &s.currency,
            job_type: fields.job_type,
            job_type_raw: fields.job_type_raw,
            pages: fields.pages,
            color_pages: fields.color_pages,
            copies: fields.copies,
            duplex: fields.duplex,
            grayscale: fields.grayscale,
            device: fields.device,
            server: fields.server,
            client: fields.client,
            document: fields.document,
            paper_size: fields.paper_size,
            comment: fields.comment,
            transaction_id: fields.transaction_id,
            balance_after: fields.balance_after,
            extra: &fields.extra,
            file,
            offset: line.offset,
            line: line.number,
            time_read: fields.time_read,
        }))
    }
}

/// The time of reading, for a record without a time of its own: whole
/// seconds in the source's zone. It is taken once, when the line is parsed;
/// the message rendered from it is stored and every redelivery sends those
/// bytes. The charge id never depends on it.
fn read_time(tz: chrono_tz::Tz) -> chrono::DateTime<chrono::FixedOffset> {
    use chrono::{SubsecRound, Utc};
    Utc::now()
        .trunc_subsecs(0)
        .with_timezone(&tz)
        .fixed_offset()
}

#[cfg(test)]
mod tests;
