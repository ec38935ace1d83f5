//! Columns: which charge field each column of a line holds, from a header
//! (names and aliases) or from positions (`split` splits the line).

use std::collections::BTreeMap;

use super::ColumnRef;

/// The charge fields a column can hold, in the order of `FIELD_NAMES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Time,
    Date,
    TransactionId,
    User,
    Account,
    AccountType,
    Amount,
    Balance,
    JobType,
    Pages,
    ColorPages,
    Copies,
    Duplex,
    Grayscale,
    Device,
    Server,
    Client,
    Document,
    PaperSize,
    Comment,
    Status,
    Refunded,
    Cancelled,
    Printed,
    UsageAllowed,
    Denied,
}

pub const FIELD_COUNT: usize = 26;

impl Field {
    pub const ALL: [Field; FIELD_COUNT] = [
        Field::Time,
        Field::Date,
        Field::TransactionId,
        Field::User,
        Field::Account,
        Field::AccountType,
        Field::Amount,
        Field::Balance,
        Field::JobType,
        Field::Pages,
        Field::ColorPages,
        Field::Copies,
        Field::Duplex,
        Field::Grayscale,
        Field::Device,
        Field::Server,
        Field::Client,
        Field::Document,
        Field::PaperSize,
        Field::Comment,
        Field::Status,
        Field::Refunded,
        Field::Cancelled,
        Field::Printed,
        Field::UsageAllowed,
        Field::Denied,
    ];

    pub fn name(self) -> &'static str {
        super::FIELD_NAMES[self as usize]
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Header names (compared normalized, see [`normalize`]) that mean this field
    /// besides its own name. A column whose name is exactly a field's name
    /// wins over one that only matches an alias.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Field::Time => &[
                "transaction date",
                "timestamp",
                "usage date",
                "transaction time",
                "date time",
            ],
            Field::Date => &[],
            Field::TransactionId => &["id", "txn id", "tx id", "job uid"],
            Field::User => &["user name", "transacted by"],
            Field::Account => &[
                "account name",
                "account charged",
                "shared account",
                // PaperCut's reports and exports.
                "charged to account",
                "charged account",
            ],
            Field::AccountType => &[],
            Field::Amount => &["cost", "usage cost", "charge", "transaction amount"],
            Field::Balance => &["balance after"],
            Field::JobType => &["type", "transaction type"],
            Field::Pages => &["total pages", "total printed pages", "printed pages"],
            Field::ColorPages => &["total color pages", "colour pages", "total colour pages"],
            Field::Copies => &[],
            Field::Duplex => &[],
            Field::Grayscale => &["greyscale"],
            Field::Device => &["printer", "printer name", "device name"],
            Field::Server => &["server name"],
            Field::Client => &["client machine"],
            Field::Document => &["document name"],
            Field::PaperSize => &["paper size name"],
            Field::Comment => &[
                "comments",
                "job comment",
                "txn comment",
                "transaction comment",
            ],
            // PaperCut's job states (`tbl_printer_usage_log` and the
            // reports): a job refunded, cancelled, denied or not printed is
            // never billed.
            Field::Status => &["job status", "job state", "state", "usage status"],
            Field::Refunded => &["is refunded", "job refunded"],
            Field::Cancelled => &["canceled", "is cancelled", "job cancelled"],
            Field::Printed => &["is printed", "job printed"],
            Field::UsageAllowed => &["allowed", "usage allowed"],
            Field::Denied => &["usage denied", "denied reason"],
        }
    }

    /// How the field is looked for, for an error message: its name and
    /// aliases as a person would write them.
    pub fn looked_for(self) -> String {
        let mut names = vec![self.name().replace('_', " ")];
        names.extend(self.aliases().iter().map(|a| (*a).to_string()));
        names.join(", ")
    }
}

/// Case, spaces, underscores and hyphens do not matter in a column name:
/// `Total Colour Pages`, `total_colour_pages` and `total-colour-pages` are
/// the same column.
pub fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-' | '\t'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Which field a column name means, if any: its own name first, then aliases.
pub fn field_for_name(name: &str) -> Option<(Field, bool)> {
    let n = normalize(name);
    if let Some(f) = Field::ALL.into_iter().find(|f| normalize(f.name()) == n) {
        return Some((f, true));
    }
    Field::ALL
        .into_iter()
        .find(|f| f.aliases().iter().any(|a| normalize(a) == n))
        .map(|f| (f, false))
}

/// Where one field is found in a row.
#[derive(Debug, Clone)]
pub struct Slot {
    /// 0-based column index.
    pub index: usize,
    /// How an error names it: `column "Cost" (5)`.
    pub label: String,
    /// A row too short to hold this column is an error (otherwise the
    /// field is simply absent: the print log's unverified trailing fields).
    pub must_exist: bool,
}

/// The columns of a file: which field is in which column, and what the
/// other columns are called (kept under `extra`).
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    pub slots: BTreeMap<Field, Slot>,
    /// 0-based index → the key under `extra` (the header as written, or
    /// `field<n>` without a header).
    pub extra: BTreeMap<usize, String>,
    /// The header's field count; `None` without a header.
    pub width: Option<usize>,
}

pub fn label(name: &str, position: usize) -> String {
    format!("column {name:?} ({position})")
}

impl Mapping {
    /// From a header row. `overrides` (config `columns`) come first: a name
    /// is matched exactly, then ignoring case/spaces/underscores/hyphens; a
    /// position is 1-based. Then each column whose name is a field's own name,
    /// then aliases, first column first. A `date` column with no `time` column
    /// holds the time (`Date` is an alias of `time` in the contract).
    pub fn from_header<H: AsRef<str>>(
        header: &[H],
        overrides: &BTreeMap<String, ColumnRef>,
    ) -> Result<Mapping, String> {
        let mut by_index: BTreeMap<usize, Field> = BTreeMap::new();
        let mut slots: BTreeMap<Field, usize> = BTreeMap::new();
        for (key, r) in overrides {
            let Some(field) = Field::from_name(key) else {
                return Err(format!("columns: {key:?} is not a charge field"));
            };
            let index = match r {
                ColumnRef::Position(p) => {
                    if *p == 0 || *p > header.len() {
                        return Err(format!(
                            "columns.{key} = {p}: the header has columns 1 to {}",
                            header.len()
                        ));
                    }
                    p - 1
                }
                ColumnRef::Name(name) => header
                    .iter()
                    .position(|h| h.as_ref().trim() == name.trim())
                    .or_else(|| {
                        let n = normalize(name);
                        header.iter().position(|h| normalize(h.as_ref()) == n)
                    })
                    .ok_or_else(|| {
                        format!("columns.{key} = {name:?}: the header has no such column")
                    })?,
            };
            if let Some(other) = by_index.insert(index, field) {
                return Err(format!(
                    "columns: {} and {key} both name column {}",
                    other.name(),
                    index + 1
                ));
            }
            slots.insert(field, index);
        }
        for exact_pass in [true, false] {
            for (i, h) in header.iter().enumerate() {
                if by_index.contains_key(&i) {
                    continue;
                }
                if let Some((field, exact)) = field_for_name(h.as_ref()) {
                    if exact == exact_pass && !slots.contains_key(&field) {
                        slots.insert(field, i);
                        by_index.insert(i, field);
                    }
                }
            }
        }
        if !slots.contains_key(&Field::Time) {
            if let Some(i) = slots.remove(&Field::Date) {
                slots.insert(Field::Time, i);
            }
        }
        let mut m = Mapping {
            width: Some(header.len()),
            ..Mapping::default()
        };
        for (field, index) in slots {
            m.slots.insert(
                field,
                Slot {
                    index,
                    label: label(header[index].as_ref().trim(), index + 1),
                    must_exist: true,
                },
            );
        }
        for (i, h) in header.iter().enumerate() {
            if m.slots.values().any(|s| s.index == i) {
                continue;
            }
            let mut key = h.as_ref().trim().to_string();
            if key.is_empty() {
                key = format!("field{}", i + 1);
            }
            if m.extra.values().any(|k| *k == key) {
                key = format!("{key}#{}", i + 1);
            }
            m.extra.insert(i, key);
        }
        Ok(m)
    }

    /// From positions, for a file without a header. `defaults` are
    /// `(field, 1-based position, name for errors, must_exist)`; `overrides`
    /// replace the field's position (and free the position they take).
    pub fn from_positions(
        defaults: &[(Field, usize, &str, bool)],
        overrides: &BTreeMap<String, ColumnRef>,
    ) -> Result<Mapping, String> {
        let mut m = Mapping::default();
        for &(field, pos, name, must_exist) in defaults {
            m.slots.insert(
                field,
                Slot {
                    index: pos - 1,
                    label: label(name, pos),
                    must_exist,
                },
            );
        }
        for (key, r) in overrides {
            let Some(field) = Field::from_name(key) else {
                return Err(format!("columns: {key:?} is not a charge field"));
            };
            let pos = match r {
                ColumnRef::Position(p) if *p > 0 => *p,
                ColumnRef::Position(p) => {
                    return Err(format!("columns.{key} = {p}: positions start at 1"))
                }
                ColumnRef::Name(name) => {
                    return Err(format!(
                        "columns.{key} = {name:?}: a column name needs a header; \
                         this file has none (header = false), give a position"
                    ))
                }
            };
            m.slots.retain(|_, s| s.index != pos - 1);
            m.slots.insert(
                field,
                Slot {
                    index: pos - 1,
                    label: label(field.name(), pos),
                    must_exist: true,
                },
            );
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &str) -> Vec<String> {
        s.split('\t').map(str::to_string).collect()
    }

    #[test]
    fn field_order_matches_field_names() {
        assert_eq!(Field::ALL.len(), super::super::FIELD_NAMES.len());
        for (i, f) in Field::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
            assert_eq!(Field::from_name(f.name()), Some(*f));
        }
    }

    #[test]
    fn names_ignore_case_spaces_underscores_hyphens() {
        assert_eq!(
            field_for_name("Total Colour Pages"),
            Some((Field::ColorPages, false))
        );
        assert_eq!(
            field_for_name("total_color-pages"),
            Some((Field::ColorPages, false))
        );
        assert_eq!(
            field_for_name("COLOR_PAGES"),
            Some((Field::ColorPages, true))
        );
        assert_eq!(field_for_name("Transacted By"), Some((Field::User, false)));
        assert_eq!(
            field_for_name("Job UID"),
            Some((Field::TransactionId, false))
        );
        assert_eq!(
            field_for_name("Paper-Size-Name"),
            Some((Field::PaperSize, false))
        );
        assert_eq!(field_for_name("Gray Scale"), Some((Field::Grayscale, true)));
        assert_eq!(field_for_name("Notes"), None);
    }

    #[test]
    fn header_mapping_exact_names_beat_aliases() {
        // "Date" is the `date` field when a `time` column exists...
        let m = Mapping::from_header(&header("Date\tTime\tUser\tCost"), &BTreeMap::new()).unwrap();
        assert_eq!(m.slots[&Field::Date].index, 0);
        assert_eq!(m.slots[&Field::Time].index, 1);
        assert_eq!(m.slots[&Field::Amount].label, "column \"Cost\" (4)");
        // ...and the time when none does.
        let m = Mapping::from_header(&header("Date\tUser\tCost"), &BTreeMap::new()).unwrap();
        assert_eq!(m.slots[&Field::Time].index, 0);
        assert!(!m.slots.contains_key(&Field::Date));
        // An exact `amount` beats an earlier alias `cost`, which goes to extra.
        let m =
            Mapping::from_header(&header("time\tuser\tcost\tamount"), &BTreeMap::new()).unwrap();
        assert_eq!(m.slots[&Field::Amount].index, 3);
        assert_eq!(m.extra[&2], "cost");
    }

    #[test]
    fn overrides_by_name_and_position() {
        let mut o = BTreeMap::new();
        o.insert("amount".to_string(), ColumnRef::Name("Betrag".into()));
        o.insert("user".to_string(), ColumnRef::Position(1));
        let m = Mapping::from_header(&header("Wer\tWann\tBetrag\tCost"), &{
            let mut o = o.clone();
            o.insert("time".into(), ColumnRef::Name("wann".into()));
            o
        })
        .unwrap();
        assert_eq!(m.slots[&Field::User].index, 0);
        assert_eq!(m.slots[&Field::Time].index, 1);
        assert_eq!(m.slots[&Field::Amount].index, 2);
        assert_eq!(m.extra[&3], "Cost");
        o.insert("account".to_string(), ColumnRef::Position(1));
        let e = Mapping::from_header(&header("a\tb\tBetrag"), &o).unwrap_err();
        assert!(e.contains("both name column 1"), "{e}");
        let mut o = BTreeMap::new();
        o.insert("amount".to_string(), ColumnRef::Name("Nope".into()));
        let e = Mapping::from_header(&header("a\tb"), &o).unwrap_err();
        assert!(e.contains("columns.amount = \"Nope\""), "{e}");
    }
}
