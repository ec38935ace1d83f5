//! chargetail: follow PaperCut's transaction files and deliver every charge.
//!
//! The pipeline, one module per stage:
//! `source` (watch, read lines, file identity) → `format` (profile, parse to
//! a `Charge`) → `store` (SQLite positions + outbox in one transaction) →
//! `deliver` (outbox worker, retries, dead letters) → `sink` (amqp, webhook,
//! stdout). `ingest` is the format → store step that `daemon` (following)
//! and `replay` (historical files) share; `daemon` wires the stages; `cli`
//! is the command line. Imports run one way, from the edges down; see
//! ARCHITECTURE.md.

pub mod billing;
pub mod charge;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod format;
pub mod http;
pub mod ingest;
pub mod inspect;
pub mod logging;
pub mod reconcile;
pub mod replay;
pub mod run_lock;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod stats;
pub mod store;
