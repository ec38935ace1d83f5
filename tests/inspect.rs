//! `chargetail inspect` on every sample shape: the profile it names, and the
//! `[source]` section it prints parses the file with `chargetail parse
//! --config` without a dead letter.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_chargetail")
}

fn sample(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample-data")
        .join(rel)
}

fn inspect(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("inspect")
        .args(args)
        .env("TZ", "UTC")
        .output()
        .expect("run chargetail inspect")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Inspect `rel`; the profile named; the section, as a config, parses the
/// file cleanly.
fn check_shape(rel: &str, profile: &str) -> String {
    check_shape_parsed(rel, profile).0
}

/// As `check_shape`, with the charges `parse` printed.
fn check_shape_parsed(rel: &str, profile: &str) -> (String, String) {
    let path = sample(rel);
    let out = inspect(&[path.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{rel}: {stderr}");
    assert!(
        stdout.contains(&format!("profile = \"{profile}\"")),
        "{rel}: {stdout}"
    );
    assert!(
        stderr.contains(&format!("profile:   {profile}")),
        "{rel}: {stderr}"
    );
    assert!(stdout.starts_with("[source]\n"), "{rel}: {stdout}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let toml = format!(
        "{stdout}\n[state]\npath = \"{}\"\n\n[sink]\nkind = \"stdout\"\n",
        dir.path().join("state.db").display()
    );
    std::fs::write(&config, toml).unwrap();
    let parsed = Command::new(bin())
        .args(["parse", "--config"])
        .arg(&config)
        .arg(&path)
        .output()
        .unwrap();
    let perr = text(&parsed.stderr);
    assert_eq!(parsed.status.code(), Some(0), "{rel}: {perr}\n{stdout}");
    assert!(!perr.contains("byte offset"), "{rel}: {perr}");
    let charges = text(&parsed.stdout);
    assert!(charges.lines().count() > 0, "{rel}: no charge");
    (stdout, charges)
}

#[test]
fn transaction_files() {
    for day in ["16", "17", "18", "19", "21", "22"] {
        let s = check_shape(
            &format!("transactions/tx-2026-11-{day}.log"),
            "transaction-file",
        );
        assert!(s.contains("delimiter = \"tab\""), "{s}");
        assert!(!s.contains("amount_sign"), "{s}");
    }
}

#[test]
fn print_log() {
    check_shape("print-logs/printlog_2026_11_20.log", "print-log");
}

#[test]
fn print_logger_csv_and_its_languages_and_encodings() {
    check_shape(
        "print-logger/papercut-print-log-2026-11-20.csv",
        "print-logger-csv",
    );
    // The whole sample decides, not the first line that is not ASCII
    // (which alone reads as windows-1250: "ańo").
    let (es, charges) = check_shape_parsed(
        "print-logger/es/papercut-print-log-2026-11-21.csv",
        "print-logger-csv",
    );
    assert!(es.contains("encoding = \"windows-1252\""), "{es}");
    assert!(charges.contains("Presupuesto año 2027.xlsx"), "{charges}");
    let (ru, charges) = check_shape_parsed(
        "print-logger/ru/papercut-print-log-2026-11-21.csv",
        "print-logger-csv",
    );
    assert!(ru.contains("encoding = \"windows-1251\""), "{ru}");
    assert!(charges.contains("Отчёт за ноябрь.docx"), "{charges}");
    let u16 = check_shape(
        "print-logger/utf16/papercut-print-log-2026-11-21.csv",
        "print-logger-csv",
    );
    assert!(u16.contains("encoding = \"utf-16le\""), "{u16}");
}

#[test]
fn print_logger_report_names_banner_header_and_extra_columns() {
    let out = inspect(&[sample("print-logger/papercut-print-log-2026-11-20.csv")
        .to_str()
        .unwrap()]);
    let err = text(&out.stderr);
    assert!(err.contains("banner:    PaperCut Print Logger"), "{err}");
    assert!(err.contains("header:    Time,User,Pages"), "{err}");
    assert!(err.contains("\"Printer\" -> device"), "{err}");
    assert!(err.contains("\"Language\" -> extra.Language"), "{err}");
    assert!(err.contains("time:      \"2026-11-20 "), "{err}");
    // Local times, no zone configured: said.
    assert!(err.contains("no zone is configured"), "{err}");
}

#[test]
fn job_details() {
    check_shape("job-details/jobs-2026-11-20.txt", "job-details");
    check_shape("job-details/jobs-manual-shapes.txt", "job-details");
    let out = inspect(&[sample("job-details/jobs-2026-11-20.txt").to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(
        err.contains("\"20261120T090256\", format %Y%m%dT%H%M%S"),
        "{err}"
    );
    // Its first record has no time: the time of reading is said.
    let out = inspect(&[sample("job-details/jobs-manual-shapes.txt")
        .to_str()
        .unwrap()]);
    let err = text(&out.stderr);
    assert!(err.contains("the time of reading is used"), "{err}");
}

#[test]
fn export_with_positive_costs_warns_of_a_flipped_sign() {
    let s = check_shape(
        "exports/papercut-job-log-2026-11-20.csv",
        "transaction-file",
    );
    assert!(s.contains("amount_sign = \"charge-positive\""), "{s}");
    let out = inspect(&[sample("exports/papercut-job-log-2026-11-20.csv")
        .to_str()
        .unwrap()]);
    let err = text(&out.stderr);
    assert!(err.contains("flipped sign?"), "{err}");
}

#[test]
fn a_debit_negative_file_with_positive_amounts_warns() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("tx.log");
    std::fs::write(
        &f,
        "time\tuser\tamount\n2026-11-20 09:00:00\talice\t1.20\n2026-11-20 09:05:00\tbob\t0.40\n",
    )
    .unwrap();
    let out = inspect(&[f.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("flipped sign? every amount is written positive (2"),
        "{err}"
    );
    // Negative amounts: no warning.
    std::fs::write(
        &f,
        "time\tuser\tamount\n2026-11-20 09:00:00\talice\t-1.20\n",
    )
    .unwrap();
    let out = inspect(&[f.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!err.contains("flipped"), "{err}");
    assert!(!text(&out.stdout).contains("amount_sign"));
}

#[test]
fn a_bad_line_exits_1_naming_line_and_reason() {
    let path = sample("transactions/tx-2026-11-20.log");
    let out = inspect(&[path.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tx-2026-11-20.log:19: column \"amount\" (5): \"abc\" is not an amount"),
        "{err}"
    );
    // The section is still printed.
    assert!(text(&out.stdout).contains("profile = \"transaction-file\""));
}

#[test]
fn json_gives_the_same_facts() {
    let path = sample("transactions/tx-2026-11-20.log");
    let out = inspect(&["--json", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["profile"], "transaction-file");
    assert_eq!(v["delimiter"], "tab");
    assert_eq!(v["dead_letter_count"], 1);
    assert_eq!(v["dead_letters"][0]["line"], 19);
    assert_eq!(v["columns"][4]["field"], "amount");
    assert_eq!(v["times_local"], true);
    assert_eq!(v["time_sample"], "2026-11-20 08:41:41");
    assert_eq!(v["time_format"], "%Y-%m-%d %H:%M:%S%.f");
    assert!(v["first_charges"].as_array().unwrap().len() == 5);
    assert!(v["section"].as_str().unwrap().starts_with("[source]\n"));
}

#[test]
fn a_configured_zone_is_kept_and_not_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nname = \"pc\"\npath = \"x\"\ntimezone = \"Australia/Melbourne\"\n\n[state]\npath = \"{}\"\n\n[sink]\nkind = \"stdout\"\n",
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let path = sample("print-logs/printlog_2026_11_20.log");
    let out = inspect(&["--config", config.to_str().unwrap(), path.to_str().unwrap()]);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{e}");
    assert!(o.contains("name = \"pc\""), "{o}");
    assert!(o.contains("timezone = \"Australia/Melbourne\"\n"), "{o}");
    assert!(!e.contains("no zone is configured"), "{e}");
}

#[test]
fn a_file_no_profile_reads_exits_1_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.txt");
    std::fs::write(&f, "hello world\nfoo bar\n").unwrap();
    let out = inspect(&[f.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no charge could be read from the file"),
        "{err}"
    );
    assert!(err.contains("notes.txt:2: "), "{err}");
}
