//! PaperCut's answers kept in the state database (`papercut_cache`, one
//! row per user or shared account) for `cache_ttl_secs`. A row read with
//! another property list (the config changed) counts as missing. Only
//! answers are kept: properties, or "no such user/account"; a failure is
//! not, so it is asked again after `retry_secs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::{EnrichError, Outcome, PapercutConfig, Subject};

pub struct Cache {
    db: Connection,
    ttl_ms: i64,
    /// The property lists the rows were read with, per kind.
    user_key: String,
    shared_key: String,
}

impl Cache {
    /// `state` is the state database, already migrated by a `Store`.
    pub fn open(cfg: &PapercutConfig, state: &Path) -> Result<Cache, EnrichError> {
        let db = Connection::open(state)?;
        db.busy_timeout(Duration::from_secs(10))?;
        Ok(Cache {
            db,
            ttl_ms: (cfg.cache_ttl_secs as i64).saturating_mul(1000),
            user_key: cfg.user_properties.join("\u{1f}"),
            shared_key: cfg.shared_account_properties.join("\u{1f}"),
        })
    }

    fn key(&self, s: &Subject) -> &str {
        match s {
            Subject::User(_) => &self.user_key,
            Subject::Shared(_) => &self.shared_key,
        }
    }

    /// The answer for `s` if one younger than the TTL is kept.
    pub fn get(&self, s: &Subject, now_ms: i64) -> Result<Option<Outcome>, EnrichError> {
        let row: Option<(String, Option<String>, i64)> = self
            .db
            .prepare_cached(
                "SELECT props_key, props, fetched_ms FROM papercut_cache WHERE kind = ?1 AND name = ?2",
            )?
            .query_row(params![s.kind(), s.name()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((key, props, fetched)) = row else {
            return Ok(None);
        };
        if key != self.key(s) || now_ms < fetched || now_ms - fetched >= self.ttl_ms {
            return Ok(None);
        }
        Ok(Some(match props {
            None => Outcome::Unknown,
            Some(json) => match serde_json::from_str::<BTreeMap<String, String>>(&json) {
                Ok(p) => Outcome::Ok(p),
                Err(_) => return Ok(None),
            },
        }))
    }

    /// Keep an answer (failures are not kept).
    pub fn put(&self, s: &Subject, outcome: &Outcome, now_ms: i64) -> Result<(), EnrichError> {
        let props = match outcome {
            Outcome::Ok(p) => Some(serde_json::to_string(p).unwrap_or_else(|_| "{}".into())),
            Outcome::Unknown => None,
            _ => return Ok(()),
        };
        self.db
            .prepare_cached(
                "INSERT INTO papercut_cache (kind, name, props_key, props, fetched_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, name) DO UPDATE SET props_key = excluded.props_key, props = excluded.props,
                 fetched_ms = excluded.fetched_ms",
            )?
            .execute(params![s.kind(), s.name(), self.key(s), props, now_ms])?;
        Ok(())
    }
}
