//! Every file in `sample-data/` parses as its profile says, with the counts
//! `sample-data/generate.py` prints, and the one deliberately bad line is
//! reported with its place and reason.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chargetail::charge::{AccountType, Charge, JobType};
use chargetail::format::{FormatSettings, LineParser, Parsed, Profile};
use chargetail::source::LineSplitter;

fn sample(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample-data")
        .join(rel)
}

fn settings(profile: Profile) -> FormatSettings {
    let mut s = FormatSettings::defaults(profile, "harbour-works");
    s.timezone = chrono_tz::Australia::Melbourne;
    s.currency = "AUD".into();
    s
}

struct Outcome {
    charges: Vec<Charge>,
    /// (line number, offset, reason)
    errors: Vec<(u64, u64, String)>,
    skipped: usize,
}

fn parse_as(profile: Profile, path: &Path, origin: &str) -> Outcome {
    parse_with(settings(profile), path, origin)
}

/// The settings a sample needs beyond its profile (README.md says which).
fn settings_for(profile: Profile, rel: &str) -> FormatSettings {
    let mut s = settings(profile);
    if rel.starts_with("print-logger/es/") {
        s.encoding = "windows-1252".parse().unwrap();
    }
    if rel.starts_with("print-logger/ru/") {
        // Detected from the file's first bytes.
        s.encoding = chargetail::format::TextEncoding::Auto;
    }
    if rel.starts_with("exports/") {
        // A report writes a job's cost positive.
        s.amount_sign = chargetail::format::AmountSign::ChargePositive;
    }
    s
}

fn parse_with(settings: FormatSettings, path: &Path, origin: &str) -> Outcome {
    let profile = settings.profile;
    let _ = profile;
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut split = LineSplitter::new(65536, 0, 1);
    let mut lines = Vec::new();
    split.feed(&data, &mut lines);
    split.finish(&mut lines);
    let mut p = LineParser::new(Arc::new(settings), origin.to_string());
    let mut out = Outcome {
        charges: Vec::new(),
        errors: Vec::new(),
        skipped: 0,
    };
    for l in &lines {
        match p.parse(l) {
            Parsed::Charge(c) => out.charges.push(*c),
            Parsed::Error(e) => out.errors.push((l.number, l.offset, e)),
            Parsed::Skip => out.skipped += 1,
        }
    }
    out
}

fn parse(profile: Profile, rel: &str) -> Outcome {
    let path = sample(rel);
    let origin = path.to_string_lossy().into_owned();
    parse_with(settings_for(profile, rel), &path, &origin)
}

const TRANSACTION_FILES: &[(&str, usize, usize)] = &[
    ("transactions/tx-2026-11-16.log", 34, 0),
    ("transactions/tx-2026-11-17.log", 38, 0),
    ("transactions/tx-2026-11-18.log", 31, 0),
    ("transactions/tx-2026-11-19.log", 28, 0),
    ("transactions/tx-2026-11-20.log", 35, 1),
    ("transactions/tx-2026-11-21.log", 8, 0),
    ("transactions/tx-2026-11-22.log", 4, 0),
];

#[test]
fn every_sample_file_parses_with_the_expected_counts() {
    let mut all: Vec<(Profile, &str, usize, usize)> = TRANSACTION_FILES
        .iter()
        .map(|&(f, c, e)| (Profile::TransactionFile, f, c, e))
        .collect();
    all.push((
        Profile::PrintLog,
        "print-logs/printlog_2026_11_20.log",
        20,
        0,
    ));
    all.push((
        Profile::PrintLoggerCsv,
        "print-logger/papercut-print-log-2026-11-20.csv",
        22,
        0,
    ));
    all.push((
        Profile::JobDetails,
        "job-details/jobs-2026-11-20.txt",
        12,
        0,
    ));
    all.extend([
        (
            Profile::PrintLoggerCsv,
            "print-logger/es/papercut-print-log-2026-11-21.csv",
            3,
            0,
        ),
        (
            Profile::JobDetails,
            "job-details/jobs-manual-shapes.txt",
            5,
            0,
        ),
        (
            Profile::PrintLoggerCsv,
            "print-logger/ru/papercut-print-log-2026-11-21.csv",
            3,
            0,
        ),
        // UTF-16 with a BOM needs no setting: the BOM says it.
        (
            Profile::PrintLoggerCsv,
            "print-logger/utf16/papercut-print-log-2026-11-21.csv",
            2,
            0,
        ),
        (
            Profile::TransactionFile,
            "exports/papercut-job-log-2026-11-20.csv",
            6,
            0,
        ),
    ]);
    let mut ids = HashSet::new();
    for (profile, file, charges, errors) in all {
        let out = parse(profile, file);
        assert_eq!(
            (out.charges.len(), out.errors.len()),
            (charges, errors),
            "{file}: {:?}",
            out.errors
        );
        for c in &out.charges {
            assert!(ids.insert(c.id.clone()), "{file}: duplicate id {}", c.id);
            assert_eq!(c.currency, "AUD");
            if !c.time_read {
                assert_eq!(
                    c.time.offset().local_minus_utc(),
                    11 * 3600,
                    "{file}: {c:?}"
                );
            }
            assert!(c.user.ends_with("@harbourworks.com.au"), "{file}: {c:?}");
            if c.account_type == AccountType::Personal {
                assert_eq!(c.account, c.user);
            }
            // Every line's charge renders as an event.
            let json: serde_json::Value =
                serde_json::from_slice(&c.to_event_json("harbour-works")).unwrap();
            assert_eq!(json["data"]["origin"]["line"], c.origin.line);
        }
    }
}

#[test]
fn the_bad_line_is_reported_with_its_place() {
    let out = parse(Profile::TransactionFile, "transactions/tx-2026-11-20.log");
    let (line, offset, reason) = &out.errors[0];
    assert_eq!(*line, 19);
    assert_eq!(reason, "column \"amount\" (5): \"abc\" is not an amount");
    let data = std::fs::read(sample("transactions/tx-2026-11-20.log")).unwrap();
    let rest = &data[*offset as usize..];
    assert!(rest.starts_with(b"2026-11-20 14:34:19\ttx-004347\t"));
    // Reading went on after it.
    assert!(out.charges.iter().any(|c| c.origin.line == 20));
}

#[test]
fn transaction_files_content() {
    let mut by_job = std::collections::BTreeMap::new();
    for (file, _, _) in TRANSACTION_FILES {
        for c in parse(Profile::TransactionFile, file).charges {
            *by_job.entry(c.job_type.as_str()).or_insert(0) += 1;
            if *file != "transactions/tx-2026-11-19.log" {
                assert!(c.transaction_id.is_some() && c.balance_after.is_some());
            }
        }
    }
    for jt in ["print", "copy", "scan", "fax", "other"] {
        assert!(by_job.get(jt).copied().unwrap_or(0) > 0, "{jt}: {by_job:?}");
    }

    let d17 = parse(Profile::TransactionFile, "transactions/tx-2026-11-17.log").charges;
    let quoted = d17
        .iter()
        .find(|c| c.document.as_deref() == Some("Budget\tQ4 \"final\".xlsx"))
        .expect("the quoted document with a tab and quotes");
    assert_eq!(quoted.transaction_id.as_deref(), Some("tx-004238"));
    assert_eq!(quoted.amount.unwrap().to_string(), "0.20");

    let d18 = parse(Profile::TransactionFile, "transactions/tx-2026-11-18.log").charges;
    let refund = d18
        .iter()
        .find(|c| c.job_type == JobType::Other)
        .expect("the refund");
    assert_eq!(refund.job_type_raw.as_deref(), Some("ADJUSTMENT"));
    assert_eq!(refund.amount.unwrap().to_string(), "-2.40");
    assert_eq!(refund.pages, None);
    assert!(refund.comment.as_deref().unwrap().starts_with("Refund"));
    let resume = d18
        .iter()
        .find(|c| c.document.as_deref() == Some("Résumé – Zoë.pdf"))
        .expect("the non-ASCII document");
    assert_eq!(resume.user, "zoe.martin@harbourworks.com.au");
    assert_eq!(resume.account_type, AccountType::Personal);
    // Scans are free but still charges: amount 0.00, not absent.
    let scan = d18.iter().find(|c| c.job_type == JobType::Scan).unwrap();
    assert_eq!(scan.amount.unwrap().to_string(), "0.00");
}

#[test]
fn a_file_without_transaction_ids_gets_content_ids() {
    let out = parse(Profile::TransactionFile, "transactions/tx-2026-11-19.log");
    assert!(out
        .charges
        .iter()
        .all(|c| c.transaction_id.is_none() && c.balance_after.is_none()));
    // Two identical records: two charges, two ids.
    let twins: Vec<&Charge> = out
        .charges
        .windows(2)
        .filter(|w| {
            let (a, b) = (&w[0], &w[1]);
            (a.time, &a.user, a.amount, &a.document) == (b.time, &b.user, b.amount, &b.document)
        })
        .flat_map(|w| [&w[0], &w[1]])
        .collect();
    assert_eq!(twins.len(), 2);
    assert_ne!(twins[0].id, twins[1].id);
    assert_eq!(twins[1].origin.line, twins[0].origin.line + 1);
}

#[test]
fn a_copy_of_a_file_gives_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    for rel in [
        "transactions/tx-2026-11-19.log",
        "transactions/tx-2026-11-20.log",
        "print-logger/papercut-print-log-2026-11-20.csv",
    ] {
        let profile = if rel.starts_with("print-logger") {
            Profile::PrintLoggerCsv
        } else {
            Profile::TransactionFile
        };
        let copy = dir.path().join("rotated.log.1");
        std::fs::copy(sample(rel), &copy).unwrap();
        let a = parse(profile, rel);
        let b = parse_as(profile, &copy, &copy.to_string_lossy());
        let ids = |o: &Outcome| o.charges.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b), "{rel}");
        assert_ne!(a.charges[0].origin.file, b.charges[0].origin.file);
    }
}

#[test]
fn print_log_sample() {
    let out = parse(Profile::PrintLog, "print-logs/printlog_2026_11_20.log");
    assert_eq!(out.skipped, 0);
    for c in &out.charges {
        assert_eq!(c.job_type, JobType::Print);
        assert!(c.amount.is_some() && c.copies.is_some() && c.duplex.is_some());
        assert_eq!(c.server.as_deref(), Some("pc-harbour"));
        assert!(c.extra.is_empty());
    }
    // 12-hour times, in file order.
    assert!(out.charges.windows(2).all(|w| w[0].time <= w[1].time));
    assert!(out
        .charges
        .iter()
        .any(|c| chrono::Timelike::hour(&c.time) >= 13));
}

#[test]
fn print_logger_sample_is_crlf_with_banner_and_no_cost() {
    let data = std::fs::read(sample("print-logger/papercut-print-log-2026-11-20.csv")).unwrap();
    assert!(data.windows(2).filter(|w| w == b"\r\n").count() >= 24);
    let out = parse(
        Profile::PrintLoggerCsv,
        "print-logger/papercut-print-log-2026-11-20.csv",
    );
    assert_eq!(out.skipped, 2);
    for c in &out.charges {
        assert_eq!(c.amount, None);
        assert_eq!(c.account_type, AccountType::Personal);
        assert!(c.device.as_deref().unwrap().starts_with("\\\\pc-harbour\\"));
        assert!(!c.extra.values().any(|v| v.contains('\r')));
        assert!(!c.extra["Size"].contains('\r'));
        assert!(c.extra.contains_key("Language"));
    }
}

#[test]
fn job_details_sample() {
    let out = parse(Profile::JobDetails, "job-details/jobs-2026-11-20.txt");
    assert!(out
        .charges
        .iter()
        .any(|c| c.account_type == AccountType::Shared));
    assert!(out
        .charges
        .iter()
        .any(|c| c.document.as_deref() == Some("Wireframes, round 2.pdf")));
    for c in &out.charges {
        assert!(c.amount.is_some() && c.server.is_some() && c.device.is_some());
        assert!(c.extra.contains_key("client-ip") && c.extra.contains_key("document-size-kb"));
    }
}

#[test]
fn print_logger_sample_has_the_real_shape() {
    let data = std::fs::read(sample("print-logger/papercut-print-log-2026-11-20.csv")).unwrap();
    let text = String::from_utf8(data).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("PaperCut Print Logger - http://www.papercut.com/")
    );
    lines.next();
    for l in lines {
        assert!(l.ends_with("kb,"), "{l}");
        assert!(l.contains(",,,"), "{l}: empty Height/Width");
    }
    let out = parse(
        Profile::PrintLoggerCsv,
        "print-logger/papercut-print-log-2026-11-20.csv",
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    for c in &out.charges {
        assert!(c.extra["Size"].ends_with("kb"));
        assert!(!c.extra.contains_key("Height") && !c.extra.contains_key("field15"));
    }
}

#[test]
fn spanish_print_logger_in_windows_1252() {
    let out = parse(
        Profile::PrintLoggerCsv,
        "print-logger/es/papercut-print-log-2026-11-21.csv",
    );
    assert_eq!(out.skipped, 2);
    let c = &out.charges;
    assert_eq!(c[0].user, "lucía.garcía@harbourworks.com.au");
    assert_eq!(c[1].document.as_deref(), Some("Diseño, versión final.pdf"));
    assert_eq!((c[1].pages, c[1].copies), (Some(12), Some(2)));
    assert_eq!(
        c[2].document.as_deref(),
        Some("Carta a \"Señor\" Núñez.docx")
    );
    assert_eq!(c[0].extra["Size"], "19kb");
}

#[test]
fn job_details_manual_shapes_sample() {
    let out = parse(Profile::JobDetails, "job-details/jobs-manual-shapes.txt");
    let c = &out.charges;
    assert!(c[0].time_read && c[1].time_read && !c[2].time_read);
    assert_eq!(c[0].device.as_deref(), Some("Front Desk"));
    assert_eq!(c[1].device.as_deref(), Some("Library, rear"));
    assert_eq!(c[2].device.as_deref(), Some("\"Harbour View\" Colour"));
    assert_eq!(c[3].account, "Studio Nine, \"Events\"");
    assert_eq!(c[4].account, "\"Koala\" Labs");
    assert_eq!(c[4].document.as_deref(), Some("Q4, final.pdf"));
}

#[test]
fn papercut_export_sample_bills_only_charged_jobs() {
    use chargetail::charge::Status;
    let out = parse(
        Profile::TransactionFile,
        "exports/papercut-job-log-2026-11-20.csv",
    );
    let st: Vec<Status> = out.charges.iter().map(|c| c.status).collect();
    assert_eq!(
        st,
        [
            Status::Charged,
            Status::Refunded,
            Status::Cancelled,
            Status::Cancelled,
            Status::Denied,
            Status::Charged
        ]
    );
    let billed: rust_decimal::Decimal = out.charges.iter().filter_map(|c| c.amount).sum();
    assert_eq!(billed.to_string(), "1.40");
    let cost: rust_decimal::Decimal = out.charges.iter().filter_map(|c| c.cost).sum();
    assert_eq!(cost.to_string(), "10.20");
    let c = &out.charges[0];
    assert_eq!((c.account.as_str(), c.pages), ("Acme Design", Some(12)));
    assert_eq!(c.comment.as_deref(), Some("client pitch"));
    assert_eq!(c.extra["total_sheets"], "6");
}

#[test]
fn cyrillic_and_utf16_print_loggers() {
    let out = parse(
        Profile::PrintLoggerCsv,
        "print-logger/ru/papercut-print-log-2026-11-21.csv",
    );
    assert_eq!(out.charges[0].device.as_deref(), Some("Бухгалтерия-МФУ"));
    assert_eq!(
        out.charges[2].document.as_deref(),
        Some("Договор аренды, редакция 2.pdf")
    );
    let rel = "print-logger/utf16/papercut-print-log-2026-11-21.csv";
    let out = parse(Profile::PrintLoggerCsv, rel);
    assert_eq!(out.skipped, 2);
    let c = &out.charges;
    assert_eq!(c[0].document.as_deref(), Some("上期報告.pdf"));
    assert_eq!(c[1].device.as_deref(), Some("上海办公室"));
    assert_eq!(c[1].document.as_deref(), Some("合同，最终版.docx"));
    // Offsets are byte offsets of the file: each line starts there.
    let data = std::fs::read(sample(rel)).unwrap();
    let at = c[1].origin.offset as usize;
    assert_eq!(&data[at..at + 4], &[b'2', 0, b'0', 0]);
    assert_eq!(&data[at - 4..at], &[0x0D, 0, 0x0A, 0]);
}
