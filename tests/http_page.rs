//! The operator's status page (`GET /`) in a real headless Chromium, and
//! `[http] token_file` on a running daemon.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::*;

/// A plain HTTP/1.0 GET with extra header lines: (status, head, body).
fn get(port: u16, path: &str, headers: &str) -> (u16, String, String) {
    let r = http_request(port, path, headers);
    (r.status, r.head, r.body)
}

fn chromium_bin() -> &'static str {
    for b in ["chromium", "chromium-browser"] {
        if Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return b;
        }
    }
    panic!("chromium is not installed (scripts/test.sh installs Debian's `chromium`)");
}

/// Run headless Chromium on `url` with a fresh profile; `what` is
/// `--dump-dom` or `--screenshot=…`. Console messages (errors, CSP
/// violations, uncaught exceptions) appear on stderr as `CONSOLE` lines.
fn chromium(profile: &Path, url: &str, what: &str) -> Output {
    let out = Command::new(chromium_bin())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn console_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// Serve one fixed HTML answer to every request (to prove the console check
/// sees errors at all).
fn serve_fixed(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// (width, height, variance of the luma over all pixels).
fn png_variance(path: &Path) -> (u32, u32, f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels = &buf[..info.buffer_size()];
    let luma: Vec<f64> = pixels
        .chunks(channels)
        .map(|p| {
            if channels >= 3 {
                0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64
            } else {
                p[0] as f64
            }
        })
        .collect();
    let mean = luma.iter().sum::<f64>() / luma.len() as f64;
    let var = luma.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / luma.len() as f64;
    (info.width, info.height, var)
}

#[test]
fn the_console_check_catches_errors() {
    let port = serve_fixed(
        "<!DOCTYPE html><html><body><p>x</p><script>console.error('boom'); nosuchfn();</script></body></html>",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = chromium(
        &dir.path().join("profile"),
        &format!("http://127.0.0.1:{port}/"),
        "--dump-dom",
    );
    let console = console_lines(&out);
    assert!(
        console.iter().any(|l| l.contains("boom"))
            && console.iter().any(|l| l.contains("nosuchfn")),
        "{console:?}"
    );
}

#[test]
fn status_page_in_headless_chromium_shows_the_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let file = tx_file(dir.path(), 12);
    append(&file, "a line that is no transaction <b>\n");
    let (cfg, port) = http_config(dir.path());
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(12, Duration::from_secs(30)), 12);
    // The chart samples the counter every second.
    std::thread::sleep(Duration::from_millis(1500));

    let (code, head, body) = get(port, "/", "");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(head.contains("default-src 'none'"), "{head}");

    let url = format!("http://127.0.0.1:{port}/");
    let out = chromium(&dir.path().join("profile1"), &url, "--dump-dom");
    let console = console_lines(&out);
    assert!(console.is_empty(), "console messages: {console:?}");
    let dom = String::from_utf8_lossy(&out.stdout);
    // The figures of this daemon, as the browser built them.
    assert!(dom.contains("id=\"service-status\">operational<"), "{body}");
    assert!(dom.contains("<dd id=\"backlog\">0</dd>"), "{dom}");
    assert!(
        dom.contains("<dd id=\"delivered-since-start\">12</dd>"),
        "{dom}"
    );
    assert!(
        dom.contains("<span id=\"delivered-last-hour\">12</span>"),
        "{dom}"
    );
    assert!(dom.contains("data-source=\"test\""), "{dom}");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(dom.contains(&format!("data-bytes=\"{size}\"")), "{dom}");
    assert!(dom.contains("class=\"n lag\" data-bytes=\"0\""), "{dom}");
    assert_eq!(dom.matches("class=\"bar\"").count(), 60);
    assert!(dom.contains("<span id=\"dead-total\">1</span>"), "{dom}");
    // The unparsable line, escaped, and what to do about it.
    assert!(dom.contains("no transaction &lt;b&gt;"), "{dom}");
    assert!(
        dom.contains("id=\"replay-command\">chargetail replay --config"),
        "{dom}"
    );
    assert!(dom.contains("http-equiv=\"refresh\""));

    let shot = dir.path().join("page.png");
    let out = chromium(
        &dir.path().join("profile2"),
        &url,
        &format!("--screenshot={}", shot.display()),
    );
    assert!(console_lines(&out).is_empty(), "{:?}", console_lines(&out));
    let (w, h, var) = png_variance(&shot);
    println!("screenshot {w}x{h}, luma variance {var:.1}");
    assert!(w >= 800 && h >= 600, "{w}x{h}");
    assert!(var > 50.0, "screenshot looks blank: variance {var}");

    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn token_file_guards_all_but_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.log");
    append(&file, HEADER);
    append(&file, &tx_line(1));
    std::fs::write(dir.path().join("http-token"), "Zq8-s3cret-token\n").unwrap();
    let port = free_http_port();
    let cfg = write_config(
        dir.path(),
        "tx*.log",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"http-token\"\n"),
    );
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(1, Duration::from_secs(30)), 1);
    let (code, _, _) = get(port, "/healthz", "");
    assert_eq!(code, 200);
    for path in ["/", "/status", "/metrics"] {
        let (code, head, _) = get(port, path, "");
        assert_eq!(code, 401, "{path} without a token: {head}");
        assert!(head.contains("Bearer"), "{head}");
        let (code, _, _) = get(port, path, "Authorization: Bearer Zq8-s3cret-tokem\r\n");
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, _, _) = get(port, path, "Authorization: Bearer Zq8-s3cret\r\n");
        assert_eq!(code, 401, "{path} with a prefix of the token");
        let (code, _, body) = get(port, path, "Authorization: Bearer Zq8-s3cret-token\r\n");
        assert_eq!(code, 200, "{path} with the token: {body}");
    }
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));

    // An empty token file is a config error (exit 2), never "no token".
    std::fs::write(dir.path().join("http-token"), "\n").unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token_file"));
}

#[test]
fn listening_beyond_loopback_without_a_token_warns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.log");
    append(&file, HEADER);
    let port = free_http_port();
    let cfg = write_config(
        dir.path(),
        "tx*.log",
        &format!("[http]\nlisten = \"0.0.0.0:{port}\"\n"),
    );
    let log = dir.path().join("daemon.log");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("CHARGETAIL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let (code, _, _) = get(port, "/healthz", "");
    assert!(code == 200 || code == 503, "{code}");
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(20)), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("without a token_file"), "{text}");
}
