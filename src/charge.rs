//! The charge: what one PaperCut record means for billing, its stable id and
//! the CloudEvents message that every sink sends byte for byte.

use std::collections::BTreeMap;
use std::collections::HashMap;

mod render;

use chrono::{DateTime, FixedOffset};
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The source name in a message's CloudEvents `source` ("papercut/NAME").
/// The renderer writes it as the second member, so the first
/// `"source":"` is it (inside a JSON string every `"` is escaped).
pub fn message_source(payload: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    const KEY: &[u8] = b"\"source\":\"papercut/";
    let start = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &payload[start..];
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'\\' => i += 2,
            b'"' => break,
            _ => i += 1,
        }
    }
    let raw = rest.get(..i)?;
    if raw.contains(&b'\\') {
        // Escapes: let serde_json decode the quoted string.
        let open = start - "papercut/".len() - 1;
        let quoted = payload.get(open..start + i + 1)?;
        let value = serde_json::from_slice::<String>(quoted).ok()?;
        return value
            .strip_prefix("papercut/")
            .map(|n| std::borrow::Cow::Owned(n.to_string()));
    }
    std::str::from_utf8(raw)
        .ok()
        .map(std::borrow::Cow::Borrowed)
}

/// Where a record was read: the file (canonical path), the byte offset of the
/// line's first byte and its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: String,
    pub offset: u64,
    pub line: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    Print,
    Copy,
    Scan,
    Fax,
    Other,
}

impl JobType {
    /// PRINT/COPY/SCAN/FAX in any case; anything else is `Other` (the caller
    /// keeps the raw value).
    pub fn from_raw(raw: &str) -> JobType {
        let raw = raw.trim();
        [
            ("print", JobType::Print),
            ("copy", JobType::Copy),
            ("scan", JobType::Scan),
            ("fax", JobType::Fax),
        ]
        .into_iter()
        .find(|(name, _)| raw.eq_ignore_ascii_case(name))
        .map_or(JobType::Other, |(_, t)| t)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Print => "print",
            JobType::Copy => "copy",
            JobType::Scan => "scan",
            JobType::Fax => "fax",
            JobType::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountType {
    Personal,
    Shared,
}

impl AccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountType::Personal => "personal",
            AccountType::Shared => "shared",
        }
    }
}

/// Whether a job is billed. A job the file marks refunded, cancelled
/// (or not printed) or denied is never billed: its `amount` is 0 and its
/// cost is kept in `cost`, so a consumer that sums amounts bills right.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Charged,
    Refunded,
    Cancelled,
    Denied,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Charged => "charged",
            Status::Refunded => "refunded",
            Status::Cancelled => "cancelled",
            Status::Denied => "denied",
        }
    }
}

/// One billable record. `amount` is what the account is billed: positive for a
/// charge, negative for a refund or credit; `None` when the file carries no
/// cost at all (Print Logger CSV): never invented.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub id: String,
    pub time: DateTime<FixedOffset>,
    pub user: String,
    pub account: String,
    pub account_type: AccountType,
    pub amount: Option<Decimal>,
    /// Charged, or why not (then `amount` is 0).
    pub status: Status,
    /// The job's cost as the file gives it (sign-normalised like `amount`),
    /// whatever the status; `None` when the file carries no cost.
    pub cost: Option<Decimal>,
    pub currency: String,
    pub job_type: JobType,
    /// The raw job type when it is not one we know (`job_type == Other`).
    pub job_type_raw: Option<String>,
    pub pages: Option<u32>,
    pub color_pages: Option<u32>,
    pub copies: Option<u32>,
    pub duplex: Option<bool>,
    pub grayscale: Option<bool>,
    pub device: Option<String>,
    pub server: Option<String>,
    pub client: Option<String>,
    pub document: Option<String>,
    pub paper_size: Option<String>,
    pub comment: Option<String>,
    pub transaction_id: Option<String>,
    pub balance_after: Option<Decimal>,
    pub extra: BTreeMap<String, String>,
    pub origin: Origin,
    /// The record had no time of its own (a job-details line without
    /// `time`): `time` is when chargetail first read it, fixed in the stored
    /// message, and `data.time_source` is `"read"`.
    pub time_read: bool,
}

impl Charge {
    /// The CloudEvents 1.0 structured-mode JSON of this charge. These bytes
    /// are rendered once, stored in the outbox and sent unchanged by every
    /// sink, so a redelivery is byte-identical to the first delivery.
    pub fn to_event_json(&self, source_name: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.write_event_json(source_name, &mut out);
        out
    }

    /// [`Charge::to_event_json`] appended to `out` (a buffer reused across
    /// charges).
    pub fn write_event_json(&self, source_name: &str, out: &mut Vec<u8>) {
        self.view().write_event_json(source_name, out);
    }

    /// The charge as a [`ChargeView`] (borrowing its text).
    pub fn view(&self) -> ChargeView<'_> {
        ChargeView {
            id: &self.id,
            time: self.time,
            user: &self.user,
            account: &self.account,
            account_type: self.account_type,
            amount: self.amount,
            status: self.status,
            cost: self.cost,
            currency: &self.currency,
            job_type: self.job_type,
            job_type_raw: self.job_type_raw.as_deref(),
            pages: self.pages,
            color_pages: self.color_pages,
            copies: self.copies,
            duplex: self.duplex,
            grayscale: self.grayscale,
            device: self.device.as_deref(),
            server: self.server.as_deref(),
            client: self.client.as_deref(),
            document: self.document.as_deref(),
            paper_size: self.paper_size.as_deref(),
            comment: self.comment.as_deref(),
            transaction_id: self.transaction_id.as_deref(),
            balance_after: self.balance_after,
            extra: &self.extra,
            file: &self.origin.file,
            offset: self.origin.offset,
            line: self.origin.line,
            time_read: self.time_read,
        }
    }
}

/// A [`Charge`] whose text is borrowed: from a `Charge`, or straight from
/// the line being parsed (`LineParser::parse_with`), so that a message can
/// be rendered without a `String` per field (those allocations and copies
/// were a sixth of `parse` time). The fields mean what `Charge`'s do;
/// `file`, `offset` and `line` are its `origin`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChargeView<'a> {
    pub id: &'a str,
    pub time: DateTime<FixedOffset>,
    pub user: &'a str,
    pub account: &'a str,
    pub account_type: AccountType,
    pub amount: Option<Decimal>,
    pub status: Status,
    pub cost: Option<Decimal>,
    pub currency: &'a str,
    pub job_type: JobType,
    pub job_type_raw: Option<&'a str>,
    pub pages: Option<u32>,
    pub color_pages: Option<u32>,
    pub copies: Option<u32>,
    pub duplex: Option<bool>,
    pub grayscale: Option<bool>,
    pub device: Option<&'a str>,
    pub server: Option<&'a str>,
    pub client: Option<&'a str>,
    pub document: Option<&'a str>,
    pub paper_size: Option<&'a str>,
    pub comment: Option<&'a str>,
    pub transaction_id: Option<&'a str>,
    pub balance_after: Option<Decimal>,
    pub extra: &'a BTreeMap<String, String>,
    pub file: &'a str,
    pub offset: u64,
    pub line: u64,
    pub time_read: bool,
}

impl ChargeView<'_> {
    /// [`Charge::write_event_json`]: the same bytes.
    pub fn write_event_json(&self, source_name: &str, out: &mut Vec<u8>) {
        render::write_event(out, self, source_name);
    }

    /// The owned charge.
    pub fn to_charge(&self) -> Charge {
        let own = |s: Option<&str>| s.map(str::to_string);
        Charge {
            id: self.id.to_string(),
            time: self.time,
            user: self.user.to_string(),
            account: self.account.to_string(),
            account_type: self.account_type,
            amount: self.amount,
            status: self.status,
            cost: self.cost,
            currency: self.currency.to_string(),
            job_type: self.job_type,
            job_type_raw: own(self.job_type_raw),
            pages: self.pages,
            color_pages: self.color_pages,
            copies: self.copies,
            duplex: self.duplex,
            grayscale: self.grayscale,
            device: own(self.device),
            server: own(self.server),
            client: own(self.client),
            document: own(self.document),
            paper_size: own(self.paper_size),
            comment: own(self.comment),
            transaction_id: own(self.transaction_id),
            balance_after: self.balance_after,
            extra: self.extra.clone(),
            origin: Origin {
                file: self.file.to_string(),
                offset: self.offset,
                line: self.line,
            },
            time_read: self.time_read,
        }
    }
}

// ---------------------------------------------------------------- the oracle

#[cfg(test)]
#[derive(Serialize)]
struct Event<'a> {
    specversion: &'static str,
    id: &'a str,
    source: String,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    data: Data<'a>,
}

#[cfg(test)]
#[derive(Serialize)]
struct Data<'a> {
    user: &'a str,
    account: &'a str,
    account_type: AccountType,
    amount: Option<String>,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<String>,
    currency: &'a str,
    job_type: JobType,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_type_raw: Option<&'a str>,
    pages: Option<u32>,
    color_pages: Option<u32>,
    copies: Option<u32>,
    duplex: Option<bool>,
    grayscale: Option<bool>,
    device: Option<&'a str>,
    server: Option<&'a str>,
    client: Option<&'a str>,
    document: Option<&'a str>,
    paper_size: Option<&'a str>,
    comment: Option<&'a str>,
    transaction_id: Option<&'a str>,
    balance_after: Option<String>,
    extra: &'a BTreeMap<String, String>,
    origin: &'a Origin,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_source: Option<&'static str>,
}

#[cfg(test)]
impl Charge {
    /// The message as serde_json wrote it before `render` replaced it: the
    /// oracle the renderer is tested against.
    pub(crate) fn to_event_json_serde(&self, source_name: &str) -> Vec<u8> {
        let event = Event {
            specversion: "1.0",
            id: &self.id,
            source: format!("papercut/{source_name}"),
            kind: "papercut.charge",
            subject: &self.account,
            time: self
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            datacontenttype: "application/json",
            data: Data {
                user: &self.user,
                account: &self.account,
                account_type: self.account_type,
                amount: self.amount.map(|a| a.to_string()),
                status: self.status,
                cost: self.cost.map(|c| c.to_string()),
                currency: &self.currency,
                job_type: self.job_type,
                job_type_raw: self.job_type_raw.as_deref(),
                pages: self.pages,
                color_pages: self.color_pages,
                copies: self.copies,
                duplex: self.duplex,
                grayscale: self.grayscale,
                device: self.device.as_deref(),
                server: self.server.as_deref(),
                client: self.client.as_deref(),
                document: self.document.as_deref(),
                paper_size: self.paper_size.as_deref(),
                comment: self.comment.as_deref(),
                transaction_id: self.transaction_id.as_deref(),
                balance_after: self.balance_after.map(|b| b.to_string()),
                extra: &self.extra,
                origin: &self.origin,
                time_source: self.time_read.then_some("read"),
            },
        };
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_vec(&event).unwrap_or_default()
    }
}

/// The charge id. Derived only from the charge itself so that the same record
/// read twice (after a crash, from a rotated or copied file, by a replay of an
/// archive) gets the same id, and two identical jobs in one file do not:
///
/// - with a native transaction id: `sha256("chargetail/v1\0tx\0" source "\0" txid)`
/// - otherwise: `sha256("chargetail/v1\0line\0" source "\0" content "\0" ordinal)`
///   where `content` is the record's raw line (no BOM, no line end) and
///   `ordinal` counts the identical lines before it in the same file.
///
/// Rendered as `chg_` + the first 16 bytes in lowercase hex. Golden vectors
/// in the tests pin this; changing it re-bills every customer's history.
pub fn charge_id(
    source: &str,
    transaction_id: Option<&str>,
    content: &[u8],
    ordinal: u64,
) -> String {
    ChargeId::new(source, transaction_id, content, ordinal)
        .as_str()
        .to_string()
}

/// A [`charge_id`] on the stack (`chg_` and 32 hex digits), for a caller
/// that needs no `String`.
#[derive(Clone, Copy)]
pub struct ChargeId([u8; 36]);

impl ChargeId {
    pub fn new(source: &str, transaction_id: Option<&str>, content: &[u8], ordinal: u64) -> Self {
        let mut h = Sha256::new();
        h.update(b"chargetail/v1\0");
        match transaction_id {
            Some(tx) => {
                h.update(b"tx\0");
                h.update(source.as_bytes());
                h.update(b"\0");
                h.update(tx.as_bytes());
            }
            None => {
                h.update(b"line\0");
                h.update(source.as_bytes());
                h.update(b"\0");
                h.update(content);
                h.update(b"\0");
                let mut digits = [0u8; 20];
                let mut i = digits.len();
                let mut n = ordinal;
                loop {
                    i -= 1;
                    digits[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                h.update(&digits[i..]);
            }
        }
        let digest = h.finalize();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 36];
        id[..4].copy_from_slice(b"chg_");
        for (i, b) in digest[..16].iter().enumerate() {
            id[4 + 2 * i] = HEX[usize::from(b >> 4)];
            id[5 + 2 * i] = HEX[usize::from(b & 0xF)];
        }
        ChargeId(id)
    }

    pub fn as_str(&self) -> &str {
        // ASCII by construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Counts identical lines within one file so each gets its ordinal. Keyed by
/// a digest of the line to keep memory at 16 bytes per distinct line.
#[derive(Debug, Default)]
pub struct OrdinalCounter {
    seen: HashMap<[u8; 16], u64>,
}

impl OrdinalCounter {
    /// The ordinal of this line among the identical lines seen so far (0 for
    /// the first), counting it.
    pub fn next(&mut self, content: &[u8]) -> u64 {
        let digest = Sha256::digest(content);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let n = self.seen.entry(key).or_insert(0);
        let ordinal = *n;
        *n += 1;
        ordinal
    }
}

// ---------------------------------------------------------------- money

/// Sums per currency, and per currency and account.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub charges: u64,
    pub by_currency: BTreeMap<String, Decimal>,
    pub by_account: BTreeMap<String, BTreeMap<String, Decimal>>,
}

impl Totals {
    /// Count one charge, and its amount where it has one.
    pub fn add(&mut self, amount: Option<Decimal>, currency: &str, account: &str) {
        self.charges += 1;
        if let Some(a) = amount {
            add_saturating(self.by_currency.entry(currency.to_string()).or_default(), a);
            add_saturating(
                self.by_account
                    .entry(currency.to_string())
                    .or_default()
                    .entry(account.to_string())
                    .or_default(),
                a,
            );
        }
    }
}

/// Add without panicking on absurd input (amounts near Decimal::MAX): a
/// total that cannot be represented stays at the bound and is logged.
pub fn add_saturating(total: &mut Decimal, a: Decimal) {
    match total.checked_add(a) {
        Some(t) => *total = t,
        None => {
            tracing::error!(%a, "total overflows; it is capped (check the amounts in the input)");
            *total = if a.is_sign_negative() {
                Decimal::MIN
            } else {
                Decimal::MAX
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vectors: these ids must never change, or every redelivery after
    /// an upgrade would look like a new charge to the billing system.
    #[test]
    fn charge_id_golden_vectors() {
        assert_eq!(
            charge_id("pc-main", Some("tx-000118"), b"ignored", 7),
            "chg_23c56c0856cda6481ada44778dec725c"
        );
        assert_eq!(
            charge_id("pc-main", None, b"2026-11-20 09:14:03\talice\t-1.20", 0),
            "chg_96a39d722addf550092610353a92e810"
        );
        assert_eq!(
            charge_id("pc-main", None, b"2026-11-20 09:14:03\talice\t-1.20", 1),
            "chg_4c0111bfd2c798166a294ed8ec0918a1"
        );
    }

    #[test]
    fn id_depends_on_source_ordinal_and_content_not_on_anything_else() {
        let a = charge_id("s1", None, b"x", 0);
        assert_eq!(a, charge_id("s1", None, b"x", 0));
        assert_ne!(a, charge_id("s2", None, b"x", 0));
        assert_ne!(a, charge_id("s1", None, b"x", 1));
        assert_ne!(a, charge_id("s1", None, b"y", 0));
        // The transaction id alone fixes the id, whatever the line says.
        assert_eq!(
            charge_id("s1", Some("t"), b"x", 0),
            charge_id("s1", Some("t"), b"y", 5)
        );
        // No ambiguity between fields: a NUL separates them.
        assert_ne!(
            charge_id("ab", None, b"c", 0),
            charge_id("a", None, b"bc", 0)
        );
    }

    #[test]
    fn ordinals_count_identical_lines() {
        let mut c = OrdinalCounter::default();
        assert_eq!(c.next(b"a"), 0);
        assert_eq!(c.next(b"b"), 0);
        assert_eq!(c.next(b"a"), 1);
        assert_eq!(c.next(b"a"), 2);
    }
}
