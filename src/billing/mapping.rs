//! The account mapping: a CSV from a PaperCut username or shared account
//! name to the billing system's customer (and team).
//!
//! ```text
//! papercut,customer_id,team_id
//! Acme Design,cus_1001,team_acme
//! maya.chen@harbourworks.com.au,cus_1002,
//! ```
//!
//! The header is required (`team_id` optional). Names are matched after
//! trimming, case-insensitively (PaperCut usernames are case-insensitive).
//! A duplicate name, a missing customer id or a row of the wrong width is
//! an error naming the file and the line: the whole file is refused and
//! the mapping in force stays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("account mapping {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("account mapping {path}, line {line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// Who pays for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub customer_id: String,
    pub team_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Mapping {
    by_name: HashMap<String, Customer>,
}

fn key(name: &str) -> String {
    name.trim().to_lowercase()
}

impl Mapping {
    pub fn load(path: &Path) -> Result<Mapping, MappingError> {
        let bytes = std::fs::read(path).map_err(|source| MappingError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Mapping::parse(&bytes, path)
    }

    pub fn parse(bytes: &[u8], path: &Path) -> Result<Mapping, MappingError> {
        let invalid = |line: u64, reason: String| MappingError::Invalid {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut rd = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        let mut records = rd.byte_records();
        let header = match records.next() {
            None => {
                return Err(invalid(
                    1,
                    "empty file: expected the header papercut,customer_id[,team_id]".into(),
                ))
            }
            Some(r) => r.map_err(|e| invalid(csv_line(&e), e.to_string()))?,
        };
        let names: Vec<String> = header
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_ascii_lowercase())
            .collect();
        let want3 = ["papercut", "customer_id", "team_id"];
        if names.len() < 2 || names.len() > 3 || names.iter().zip(want3).any(|(a, b)| a != b) {
            return Err(invalid(
                1,
                format!(
                    "header is {:?}; expected papercut,customer_id or papercut,customer_id,team_id",
                    names.join(",")
                ),
            ));
        }
        let width = names.len();
        let mut by_name: HashMap<String, (Customer, u64)> = HashMap::new();
        for rec in records {
            let rec = rec.map_err(|e| invalid(csv_line(&e), e.to_string()))?;
            let line = rec.position().map(|p| p.line()).unwrap_or(0);
            let field = |i: usize| -> Result<Option<String>, MappingError> {
                match rec.get(i) {
                    None => Ok(None),
                    Some(b) => {
                        let s = std::str::from_utf8(b)
                            .map_err(|_| invalid(line, format!("field {} is not UTF-8", i + 1)))?
                            .trim()
                            .to_string();
                        Ok((!s.is_empty()).then_some(s))
                    }
                }
            };
            if rec.len() == 1
                && rec
                    .get(0)
                    .is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
            {
                continue; // a blank line
            }
            if rec.len() != width {
                return Err(invalid(
                    line,
                    format!("{} fields, the header has {width}", rec.len()),
                ));
            }
            let name = field(0)?.ok_or_else(|| invalid(line, "empty papercut name".into()))?;
            let customer_id =
                field(1)?.ok_or_else(|| invalid(line, format!("{name:?} has no customer_id")))?;
            let team_id = if width == 3 { field(2)? } else { None };
            let k = key(&name);
            if let Some((_, first)) = by_name.get(&k) {
                return Err(invalid(
                    line,
                    format!("{name:?} is mapped twice (first on line {first})"),
                ));
            }
            by_name.insert(
                k,
                (
                    Customer {
                        customer_id,
                        team_id,
                    },
                    line,
                ),
            );
        }
        Ok(Mapping {
            by_name: by_name.into_iter().map(|(k, (c, _))| (k, c)).collect(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Customer> {
        self.by_name.get(&key(name))
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn csv_line(e: &csv::Error) -> u64 {
    e.position().map(|p| p.line()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Mapping, MappingError> {
        Mapping::parse(text.as_bytes(), Path::new("/etc/accounts.csv"))
    }

    #[test]
    fn maps_names_case_insensitively_with_optional_team() {
        let m = parse(
            "papercut,customer_id,team_id\nAcme Design,cus_1,team_a\nmaya@x.au,cus_2,\n\n\"Studio, Nine\",cus_3,t\n",
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("acme design").unwrap().customer_id, "cus_1");
        assert_eq!(
            m.get("Acme Design").unwrap().team_id.as_deref(),
            Some("team_a")
        );
        assert_eq!(m.get("MAYA@x.au").unwrap().team_id, None);
        assert_eq!(m.get("Studio, Nine").unwrap().customer_id, "cus_3");
        assert!(m.get("nobody").is_none());
        let two = parse("\u{feff}papercut,customer_id\nbob,cus_9\n").unwrap();
        assert_eq!(two.get("bob").unwrap().customer_id, "cus_9");
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let e = parse("papercut,customer_id\nbob,c1\nBOB,c2\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/accounts.csv")
                && e.contains("line 3")
                && e.contains("twice")
                && e.contains("line 2"),
            "{e}"
        );
        let e = parse("papercut,customer_id\nbob,c1,extra\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("3 fields"), "{e}");
        let e = parse("papercut,customer_id\nbob,\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("no customer_id"), "{e}");
        let e = parse("user,customer\nbob,c\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("header"), "{e}");
        let e = parse("").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
