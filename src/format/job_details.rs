//! `job-details`: the `name=value,...` job format of PaperCut's Web Services
//! `processJob` call and `server-command process-job`. One job per line; a
//! pair holding a comma is quoted whole (`"document-name=a, b"`), a quote
//! inside doubled. Names are matched like column headers (`total-pages` is
//! `pages`, `printer` is `device`, `shared-account` is `account`…).

use std::collections::BTreeMap;

use super::columns::{self, field_for_name, Field};
use super::record::{Defaults, Record};
use super::{ColumnRef, FormatSettings};

/// The names PaperCut requires in a job (`time` is ours: without it the
/// charge has no time, and the time of reading would be an invention).
const REQUIRED: &[&str] = &["user", "server", "printer", "time"];

pub fn step(
    s: &FormatSettings,
    text: &str,
    defaults: Defaults,
) -> Result<(Record<'static>, Defaults), String> {
    let cells = columns::split_line(text, s.delimiter.unwrap_or(b','))?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        if cell.trim().is_empty() {
            continue; // `a=1,,b=2`: an empty pair carries nothing
        }
        let Some((name, value)) = cell.split_once('=') else {
            return Err(format!("pair {} {cell:?} is not name=value", i + 1));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("pair {} {cell:?} has no name", i + 1));
        }
        if pairs.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(format!("{name:?} is given twice"));
        }
        pairs.push((name.to_string(), value.to_string()));
    }
    for req in REQUIRED {
        let given = pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(req))
            .map(|(_, v)| v.trim());
        match given {
            None => {
                return Err(format!(
                    "missing {req:?} (a job needs user, server, printer and time)"
                ))
            }
            Some("") => return Err(format!("field {req:?}: empty")),
            Some(_) => {}
        }
    }

    // Config `columns` may name the pair of a field (`amount = "price"`).
    let mut by_name: BTreeMap<String, Field> = BTreeMap::new();
    for (key, r) in &s.columns {
        match (Field::from_name(key), r) {
            (Some(f), ColumnRef::Name(n)) => {
                by_name.insert(n.trim().to_ascii_lowercase(), f);
            }
            (_, ColumnRef::Position(p)) => {
                return Err(format!(
                    "columns.{key} = {p}: job details have names, not positions"
                ))
            }
            (None, _) => return Err(format!("columns: {key:?} is not a charge field")),
        }
    }
    // Which field each pair is: a name from the config first, then a
    // field's own name, then an alias; a field already taken leaves the
    // pair under `extra`.
    let ranked: Vec<Option<(u8, Field)>> = pairs
        .iter()
        .map(|(name, _)| match by_name.get(&name.to_ascii_lowercase()) {
            Some(f) => Some((0, *f)),
            None => field_for_name(name).map(|(f, exact)| (if exact { 1 } else { 2 }, f)),
        })
        .collect();
    let mut chosen: Vec<Option<Field>> = vec![None; pairs.len()];
    let mut rec = Record::default();
    for rank in 0..3 {
        for (i, r) in ranked.iter().enumerate() {
            if let Some((k, f)) = *r {
                if k == rank && !rec.has(f) {
                    let (name, value) = &pairs[i];
                    rec.set(f, value.clone(), format!("field {name:?}"));
                    chosen[i] = Some(f);
                }
            }
        }
    }
    let mut shared = false;
    for ((name, value), field) in pairs.into_iter().zip(chosen) {
        match field {
            Some(Field::Account) => shared = columns::normalize(&name) == "sharedaccount",
            Some(_) => {}
            None => {
                rec.extra.insert(name, value);
            }
        }
    }
    Ok((
        rec,
        Defaults {
            account_is_shared: shared,
            ..defaults
        },
    ))
}
