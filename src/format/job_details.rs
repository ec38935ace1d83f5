//! `job-details`: the `name=value,...` job format of PaperCut's Web Services
//! `processJob` call and `server-command process-job`. One job per line.
//! Quoting as PaperCut's manual ("Import print job details") prints it:
//! a pair holding a comma is quoted whole (`"printer=Library, rear"`), a
//! quote inside a value is doubled, quoted pair or not
//! (`printer=""John Smith"" Library` is the printer `"John Smith" Library`).
//! A value quoted on its own (`document-name="a, b"`) is taken too. Names are
//! matched like column headers (`total-pages` is `pages`, `printer` is
//! `device`, `shared-account` is `account`…). `time` is optional, as in the
//! manual: a job without one takes the time it was read.

use std::collections::BTreeMap;

use super::columns::{field_for_name, Field};
use super::record::{Defaults, Record};
use super::{ColumnRef, FormatSettings};

/// The names PaperCut requires in a job.
const REQUIRED: &[&str] = &["user", "server", "printer"];

/// Split a job line into its pairs (unquoted as PaperCut reads them).
pub fn split_pairs(text: &str, delimiter: char) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut n = 1;
    loop {
        let mut cell = String::new();
        // Leading spaces before a quoted pair do not make it unquoted.
        while chars.peek() == Some(&' ') {
            chars.next();
            cell.push(' ');
        }
        if chars.peek() == Some(&'"') && !cell_starts_doubled(&chars) {
            chars.next();
            cell.clear();
            quoted(&mut chars, &mut cell).map_err(|()| unclosed(n))?;
            // After the closing quote: up to the delimiter (kept as is).
            let mut ended = true;
            for c in chars.by_ref() {
                if c == delimiter {
                    ended = false;
                    break;
                }
                cell.push(c);
            }
            out.push(cell);
            if ended {
                return Ok(out);
            }
            n += 1;
            continue;
        }
        // Unquoted pair: a doubled quote is one quote; a value opening with
        // a single quote is quoted on its own.
        let mut after_eq = false;
        let mut ended = true;
        while let Some(c) = chars.next() {
            if c == delimiter {
                ended = false;
                break;
            }
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cell.push('"');
                } else if after_eq && cell.ends_with('=') {
                    quoted(&mut chars, &mut cell).map_err(|()| unclosed(n))?;
                } else {
                    cell.push('"');
                }
            } else {
                cell.push(c);
            }
            if c == '=' {
                after_eq = true;
            }
        }
        out.push(cell);
        if ended {
            return Ok(out);
        }
        n += 1;
    }
}

fn unclosed(n: usize) -> String {
    format!("pair {n} opens a quote that does not close on this line")
}

fn cell_starts_doubled(chars: &std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let mut c = chars.clone();
    c.next();
    c.peek() == Some(&'"')
}

/// Read a quoted run up to its closing quote (a doubled quote is one).
fn quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    cell: &mut String,
) -> Result<(), ()> {
    while let Some(c) = chars.next() {
        if c == '"' {
            if chars.peek() == Some(&'"') {
                chars.next();
                cell.push('"');
            } else {
                return Ok(());
            }
        } else {
            cell.push(c);
        }
    }
    Err(())
}

pub fn step(
    s: &FormatSettings,
    text: &str,
    defaults: Defaults,
) -> Result<(Record<'static>, Defaults), String> {
    let delimiter = char::from(s.delimiter.unwrap_or(b','));
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let cells = split_pairs(text, delimiter)?;
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
                    "missing {req:?} (a job needs user, server and printer)"
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
            Some(Field::Account) => shared = super::columns::normalize(&name) == "sharedaccount",
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
