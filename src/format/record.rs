//! From a record's raw values (whatever profile they came from) to the
//! fields of a `Charge`. Shared by every profile so that a value means the
//! same thing whichever file it was read from.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use rust_decimal::Decimal;

use super::columns::{Field, FIELD_COUNT};
use super::fields::{self, BoolKind};
use super::times;
use super::{AmountSign, FormatSettings};
use crate::charge::{AccountType, JobType, Status};

/// One raw value and how to name it in an error. Both usually borrow: the
/// text from the line, the label from the column mapping (no allocation
/// per field).
#[derive(Debug, Clone)]
pub struct Value<'a> {
    pub text: Cow<'a, str>,
    /// `column "Cost" (5)`, `"cost"`…
    pub label: Cow<'a, str>,
}

/// A record's values by field, plus the values of columns that are no field.
#[derive(Debug, Default)]
pub struct Record<'a> {
    values: [Option<Value<'a>>; FIELD_COUNT],
    pub extra: BTreeMap<String, String>,
}

/// What a profile decides when its file is silent.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// The job type when there is no job type value. `None` → `other`.
    pub job_type: Option<JobType>,
    /// Whether a record without an amount column is an error (the
    /// transaction file: it is a billing record) or has `amount: None` (a
    /// print log that carries no cost).
    pub amount_required: bool,
    /// Whether the account value names a shared account outright
    /// (job-details' `shared-account`), instead of being compared with the
    /// user.
    pub account_is_shared: bool,
    /// Whether a record may lack a time (job details, where PaperCut's
    /// default is the time the job is processed): it then takes the time it
    /// was read.
    pub time_optional: bool,
}

/// Everything of a charge that a line determines (the id and origin are
/// added by the caller). The text borrows the record's values.
#[derive(Debug)]
pub struct Fields<'r> {
    pub time: DateTime<FixedOffset>,
    /// `time` is the time of reading (the record had none).
    pub time_read: bool,
    pub status: Status,
    /// The cost as written (sign-normalised); `amount` is 0 when the job is
    /// not billed.
    pub cost: Option<Decimal>,
    pub user: &'r str,
    pub account: &'r str,
    pub account_type: AccountType,
    pub amount: Option<Decimal>,
    pub job_type: JobType,
    pub job_type_raw: Option<&'r str>,
    pub pages: Option<u32>,
    pub color_pages: Option<u32>,
    pub copies: Option<u32>,
    pub duplex: Option<bool>,
    pub grayscale: Option<bool>,
    pub device: Option<&'r str>,
    pub server: Option<&'r str>,
    pub client: Option<&'r str>,
    pub document: Option<&'r str>,
    pub paper_size: Option<&'r str>,
    pub comment: Option<&'r str>,
    pub transaction_id: Option<&'r str>,
    pub balance_after: Option<Decimal>,
    pub extra: BTreeMap<String, String>,
}

impl<'a> Record<'a> {
    pub fn set(
        &mut self,
        field: Field,
        text: impl Into<Cow<'a, str>>,
        label: impl Into<Cow<'a, str>>,
    ) {
        self.values[field as usize] = Some(Value {
            text: text.into(),
            label: label.into(),
        });
    }

    pub fn has(&self, field: Field) -> bool {
        self.values[field as usize].is_some()
    }

    /// Whether the record has the field's column at all.
    fn get(&self, field: Field) -> Option<&Value<'a>> {
        self.values[field as usize].as_ref()
    }

    /// The trimmed value, `None` when absent or empty: an empty string is no
    /// value, never an invented one.
    fn text(&self, field: Field) -> Option<(&str, &str)> {
        self.get(field)
            .map(|v| (trim(&v.text), &*v.label))
            .filter(|(t, _)| !t.is_empty())
    }

    fn string(&self, field: Field) -> Option<&str> {
        self.text(field).map(|(t, _)| t)
    }

    fn parsed<T>(
        &self,
        field: Field,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.text(field) {
            None => Ok(None),
            Some((t, label)) => f(t).map(Some).map_err(|e| format!("{label}: {e}")),
        }
    }

    /// `now` gives the time of reading, asked only for a record without a
    /// time where the profile allows one. The extra values are taken out
    /// of the record.
    pub fn build(
        &mut self,
        s: &FormatSettings,
        d: Defaults,
        now: impl FnOnce() -> DateTime<FixedOffset>,
    ) -> Result<Fields<'_>, String> {
        let extra = std::mem::take(&mut self.extra);
        self.build_with(extra, s, d, now)
    }

    fn build_with(
        &self,
        extra: BTreeMap<String, String>,
        s: &FormatSettings,
        d: Defaults,
        now: impl FnOnce() -> DateTime<FixedOffset>,
    ) -> Result<Fields<'_>, String> {
        let no_time = match self.get(Field::Time) {
            None => true,
            Some(v) => trim(&v.text).is_empty(),
        };
        let (time, time_read) = if d.time_optional && no_time {
            (now(), true)
        } else {
            (self.time(s)?, false)
        };
        let user = match self.get(Field::User) {
            None => return Err("no user column: a charge needs a user".into()),
            Some(v) if trim(&v.text).is_empty() => {
                return Err(format!("{}: empty, a charge needs a user", v.label))
            }
            Some(v) => trim(&v.text),
        };
        let (account, account_type) = self.account(user, d)?;
        let amount = match self.get(Field::Amount) {
            None if d.amount_required => {
                return Err("no amount column: a billing record needs an amount".into())
            }
            None => None,
            Some(v) => {
                let written = fields::parse_amount(&v.text, s.decimal_comma, &s.currency)
                    .map_err(|e| format!("{}: {e}", v.label))?;
                Some(fields::normalize_zero(match s.amount_sign {
                    AmountSign::DebitNegative => -written,
                    AmountSign::ChargePositive => written,
                }))
            }
        };
        let status = self.status()?;
        let cost = amount;
        let amount = match status {
            Status::Charged => cost,
            _ => Some(Decimal::ZERO),
        };
        let balance_after = self.parsed(Field::Balance, |t| {
            fields::parse_amount(t, s.decimal_comma, &s.currency)
        })?;
        let (job_type, job_type_raw) = match self.text(Field::JobType) {
            Some((raw, _)) => {
                let jt = JobType::from_raw(raw);
                (jt, (jt == JobType::Other).then_some(raw))
            }
            None => (d.job_type.unwrap_or(JobType::Other), None),
        };
        Ok(Fields {
            time,
            time_read,
            status,
            cost,
            user,
            account,
            account_type,
            amount,
            job_type,
            job_type_raw,
            pages: self.parsed(Field::Pages, fields::parse_count)?,
            color_pages: self.parsed(Field::ColorPages, fields::parse_count)?,
            copies: self.parsed(Field::Copies, fields::parse_count)?,
            duplex: self.parsed(Field::Duplex, |t| fields::parse_bool(t, BoolKind::Duplex))?,
            grayscale: self.parsed(Field::Grayscale, |t| {
                fields::parse_bool(t, BoolKind::Grayscale)
            })?,
            device: self.string(Field::Device),
            server: self.string(Field::Server),
            client: self.string(Field::Client),
            document: self.string(Field::Document),
            paper_size: self.string(Field::PaperSize),
            comment: self.string(Field::Comment),
            transaction_id: self.string(Field::TransactionId),
            balance_after,
            extra: extra
                .into_iter()
                .filter_map(|(k, v)| {
                    let t = v.trim();
                    if t.is_empty() {
                        None
                    } else if t.len() == v.len() {
                        Some((k, v))
                    } else {
                        Some((k, t.to_string()))
                    }
                })
                .collect(),
        })
    }

    /// Billed, or why not: a status column (`refunded`, `cancelled`,
    /// `denied`, `printed`…) or PaperCut's job flags (`refunded`,
    /// `cancelled`, `printed`, `usage_allowed`, `denied`). Refunded wins over
    /// cancelled, then denied; a job not printed
    /// (and not denied) is cancelled.
    fn status(&self) -> Result<Status, String> {
        let flag = |f: Field| self.parsed(f, |t| fields::parse_bool(t, BoolKind::Flag));
        let text = self.parsed(Field::Status, fields::parse_status)?;
        let refunded = flag(Field::Refunded)?;
        let cancelled = flag(Field::Cancelled)?;
        let printed = flag(Field::Printed)?;
        let allowed = flag(Field::UsageAllowed)?;
        // A yes/no, or a reason (`denied_reason`): any text but "no" denies.
        let denied = self
            .text(Field::Denied)
            .map(|(t, _)| fields::parse_bool(t, BoolKind::Flag).unwrap_or(true));
        Ok(
            if refunded == Some(true) || text == Some(Status::Refunded) {
                Status::Refunded
            } else if cancelled == Some(true) || text == Some(Status::Cancelled) {
                Status::Cancelled
            } else if allowed == Some(false) || denied == Some(true) || text == Some(Status::Denied)
            {
                Status::Denied
            } else if printed == Some(false) {
                // Not printed (and not denied): it never came out.
                Status::Cancelled
            } else {
                Status::Charged
            },
        )
    }

    /// The time from one value, or from a date and a time of day in two
    /// (the print log).
    fn time(&self, s: &FormatSettings) -> Result<DateTime<FixedOffset>, String> {
        let Some(time) = self.get(Field::Time) else {
            return Err("no time column: a charge needs a time".into());
        };
        let at = |e: String| format!("{}: {e}", time.label);
        match self.get(Field::Date) {
            Some(date) if !date.text.trim().is_empty() => {
                let day =
                    times::parse_date(&date.text).map_err(|e| format!("{}: {e}", date.label))?;
                let tod = match times::parse_time_of_day(&time.text) {
                    Ok(t) => t,
                    // A time column holding the full date and time, agreeing
                    // with the date column, is as good.
                    Err(e) => {
                        return match times::parse_datetime(&time.text, s.timezone) {
                            Ok(full) if full.date_naive() == day => Ok(full),
                            _ => Err(at(e)),
                        }
                    }
                };
                let t = times::resolve_local(day.and_time(tod), s.timezone);
                times::check_year(date.text.trim(), t).map_err(|e| format!("{}: {e}", date.label))
            }
            Some(date) => Err(format!("{}: empty, a charge needs a date", date.label)),
            None => times::parse_datetime(&time.text, s.timezone).map_err(at),
        }
    }

    /// The account charged and its type: an `account_type` value when there
    /// is one; otherwise personal when the account is absent (the user's own
    /// account) or is the user's name, shared otherwise.
    fn account<'r>(&'r self, user: &'r str, d: Defaults) -> Result<(&'r str, AccountType), String> {
        let account = self.string(Field::Account);
        let written = match self.text(Field::AccountType) {
            None => None,
            Some((t, label)) => Some(match t.to_ascii_lowercase().as_str() {
                "personal" | "user" => AccountType::Personal,
                "shared" => AccountType::Shared,
                _ => {
                    return Err(format!(
                        "{label}: {t:?} is not an account type (personal or shared)"
                    ))
                }
            }),
        };
        match (account, written) {
            (None, Some(AccountType::Shared)) => Err(format!(
                "{}: the account type is shared but no account is named",
                self.text(Field::AccountType).map_or("", |(_, l)| l)
            )),
            (None, t) => Ok((user, t.unwrap_or(AccountType::Personal))),
            (Some(a), Some(t)) => Ok((a, t)),
            (Some(a), None) => {
                let t = if !d.account_is_shared && a.eq_ignore_ascii_case(user) {
                    AccountType::Personal
                } else {
                    AccountType::Shared
                };
                Ok((a, t))
            }
        }
    }
}

/// `str::trim`, with a shortcut for the usual value that starts and ends
/// with a visible ASCII character (no whitespace, Unicode's included, can
/// be there): the generic trim decodes a character at each end.
pub fn trim(s: &str) -> &str {
    match s.as_bytes() {
        [first, .., last] if is_visible_ascii(*first) && is_visible_ascii(*last) => s,
        [only] if is_visible_ascii(*only) => s,
        _ => s.trim(),
    }
}

fn is_visible_ascii(b: u8) -> bool {
    b > b' ' && b < 0x80
}
