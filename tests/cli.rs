//! The command line as users run it: parse, help, man page, completions.

mod support;

use support::*;

fn sample(p: &str) -> String {
    format!("{}/sample-data/{p}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn parse_prints_charges_and_reports_bad_lines_with_their_place() {
    let out = run_cli(&[
        "parse",
        "--config",
        &sample("demo.toml"),
        &sample("transactions/tx-2026-11-2[01].log"),
    ]);
    assert_eq!(out.status.code(), Some(1), "a bad line makes parse exit 1");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 35 + 8);
    for l in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["source"], "papercut/harbour-works");
        assert!(v["id"].as_str().unwrap().starts_with("chg_"));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tx-2026-11-20.log:19:") && stderr.contains("\"abc\" is not an amount"),
        "{stderr}"
    );
}

#[test]
fn parse_other_profiles_without_config() {
    for (profile, file, n) in [
        ("print-log", "print-logs/printlog_2026_11_20.log", 20),
        (
            "print-logger-csv",
            "print-logger/papercut-print-log-2026-11-20.csv",
            22,
        ),
        ("job-details", "job-details/jobs-2026-11-20.txt", 12),
    ] {
        let out = run_cli(&["parse", "--profile", profile, &sample(file)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{profile}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().lines().count(),
            n,
            "{profile}"
        );
    }
}

#[test]
fn parse_is_deterministic_and_touches_no_state() {
    let a = run_cli(&[
        "parse",
        "--config",
        &sample("demo.toml"),
        &sample("transactions/tx-2026-11-19.log"),
    ]);
    let b = run_cli(&[
        "parse",
        "--config",
        &sample("demo.toml"),
        &sample("transactions/tx-2026-11-19.log"),
    ]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout, "same bytes, same ids, every time");
}

#[test]
fn missing_file_and_bad_usage_exit_2() {
    let out = run_cli(&["parse", "/nonexistent/tx.log"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tx.log"));
    let out = run_cli(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_command_has_help_and_packaging_outputs_exist() {
    for cmd in ["run", "replay", "parse", "status", "dead-letters", "check"] {
        let out = run_cli(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd}"
        );
    }
    let man = run_cli(&["man"]);
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH chargetail 1"));
    let bash = run_cli(&["completions", "bash"]);
    assert!(String::from_utf8_lossy(&bash.stdout).contains("replay"));
}

#[test]
fn log_formats_json_and_journald() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "tx.log", "");
    // status on a state that does not exist yet logs an error.
    let out = std::process::Command::new(bin())
        .args(["--log-format", "json", "status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(v["level"], "ERROR");
    assert!(v["timestamp"].is_string());
    let out = std::process::Command::new(bin())
        .args(["status", "--config"])
        .arg(&cfg)
        .env("JOURNAL_STREAM", "8:12345")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with("ERROR"),
        "journald lines carry no timestamp: {first}"
    );
    assert!(
        !first.contains('\u{1b}'),
        "no colours under journald: {first:?}"
    );
}

/// Runs `chargetail ARGS` with stdout a pipe whose reader closes after the
/// first line (what `| head -1` does).
fn run_into_closed_pipe(args: &[&str]) -> std::process::Output {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut r = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        r.read_line(&mut first).unwrap();
    } // the reader is dropped: the pipe is closed
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_commands_quietly_with_status_0() {
    // Big enough to outgrow the pipe buffer after the reader is gone.
    let dir = tempfile::tempdir().unwrap();
    let mut data = String::from("time\tuser\tamount\n");
    for i in 0..20_000 {
        data.push_str(&format!("2026-11-20 09:14:03\tu{i}\t-1.20\n"));
    }
    let f = dir.path().join("tx.log");
    std::fs::write(&f, data).unwrap();
    let out = run_into_closed_pipe(&["parse", f.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("rror"),
        "{stderr}"
    );
    // `println!` commands too (`completions` prints far more than a pipe holds).
    let out = run_into_closed_pipe(&["completions", "bash"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn dead_letters_list_json_into_a_closed_pipe_ends_quietly() {
    // Thousands of unparsable lines become dead letters: their JSON listing
    // outgrows the pipe buffer after the reader is gone (`| head`).
    let dir = tempfile::tempdir().unwrap();
    let mut data = String::from("time\tuser\tamount\n");
    for i in 0..3_000 {
        data.push_str(&format!("not a time {i}\tu{i}\t-1.20\n"));
    }
    let f = dir.path().join("tx.log");
    std::fs::write(&f, data).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname='pc'\npath='{}'\ntimezone='UTC'\n[state]\npath='s.db'\n",
            f.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    run_cli(&["replay", "--config", c, f.to_str().unwrap()]);
    let listed = run_cli(&["dead-letters", "--config", c, "list", "--json"]);
    assert!(
        listed.stdout.len() > 256 * 1024,
        "the listing must outgrow a pipe: {} bytes",
        listed.stdout.len()
    );
    let out = run_into_closed_pipe(&["dead-letters", "--config", c, "list", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("rror"),
        "{stderr}"
    );
}

#[test]
fn errors_are_said_once_and_check_warns_of_a_path_in_no_directory() {
    let out = run_cli(&["status", "--config", "/nonexistent/chargetail.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("/nonexistent/chargetail.toml").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("No such file"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[source]\nname='pc'\npath='/nonexistent-dir/papercut/*.log'\ntimezone='UTC'\n[state]\npath='s.db'\n",
    )
    .unwrap();
    let out = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning: [source] path") && stdout.contains("/nonexistent-dir/papercut"),
        "{stdout}"
    );
}

#[test]
fn parse_says_the_time_zone_once() {
    let out = std::process::Command::new(bin())
        .args(["parse", &sample("transactions/tx-2026-11-21.log")])
        .env("TZ", "Europe/Madrid")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("Europe/Madrid (the system's zone").count(),
        1,
        "{stderr}"
    );
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert!(
        first["time"].as_str().unwrap().ends_with("+01:00"),
        "{first}"
    );
}
