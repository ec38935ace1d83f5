//! `GET /`: the operator's status page. Server-rendered HTML with its style
//! inline and no script or external asset (the Content-Security-Policy
//! forbids any); it reloads itself every few seconds.
//!
//! [`gather`] reads the figures (on a blocking thread: it queries SQLite and
//! stats files), [`render`] turns them into the page.

use std::fmt::Write as _;

use crate::store::{now_ms, DeadLetter, Totals};

use super::{problems, service_status, HttpState};

/// Seconds between reloads of the page.
pub const REFRESH_SECS: u32 = 5;
/// Dead letters listed (the rest are counted).
const DEAD_SHOWN: usize = 50;

pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; form-action 'none'";

/// Everything the page shows, gathered at one moment.
#[derive(Debug, Clone)]
pub struct PageData {
    pub now_ms: i64,
    pub started_ms: i64,
    pub timezone: chrono_tz::Tz,
    pub config_file: String,
    pub service_status: &'static str,
    pub problems: Vec<(&'static str, String)>,
    pub sources: Vec<SourceView>,
    pub totals: Option<Totals>,
    /// Charges delivered in each of the last 60 minutes, oldest first.
    pub per_minute: Vec<u64>,
    pub sink_kind: String,
    pub sink_connected: bool,
    pub sink_alert: Option<String>,
    pub delivered_since_start: u64,
    pub dead: Vec<DeadLetter>,
    pub dead_total: usize,
}

#[derive(Debug, Clone)]
pub struct SourceView {
    pub name: String,
    pub path: String,
    pub profile: String,
    pub files: Vec<FileView>,
}

#[derive(Debug, Clone)]
pub struct FileView {
    pub path: String,
    pub position: u64,
    pub size: u64,
    pub updated_ms: Option<i64>,
}

impl FileView {
    pub fn lag(&self) -> u64 {
        self.size.saturating_sub(self.position)
    }
}

/// Each configured source with the files it follows now (position, size).
pub fn source_views(s: &HttpState, checkpoints: &[crate::source::Checkpoint]) -> Vec<SourceView> {
    let one = s.cfg.sources.len() == 1;
    s.cfg
        .sources
        .iter()
        .map(|src| {
            let files = checkpoints
                .iter()
                // Rows from before sources had names are the only source's.
                .filter(|c| !c.finished && (c.source == src.name || (c.source.is_empty() && one)))
                .map(|c| {
                    let meta = std::fs::metadata(&c.path).ok();
                    FileView {
                        path: c.path.to_string_lossy().into_owned(),
                        position: c.offset,
                        size: meta.as_ref().map(|m| m.len()).unwrap_or(c.size),
                        updated_ms: meta
                            .and_then(|m| m.modified().ok())
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map(|d| d.as_millis() as i64),
                    }
                })
                .collect();
            SourceView {
                name: src.name.clone(),
                path: src.path.clone(),
                profile: src.profile.as_str().to_string(),
                files,
            }
        })
        .collect()
}

pub fn gather(s: &HttpState) -> PageData {
    let now = now_ms();
    // Bring the current minute of the chart up to date.
    s.rate
        .sample(crate::stats::Stats::get(&s.stats.delivered), now);
    let read = s.read(|store| {
        Ok((
            store.totals()?,
            store.checkpoints()?,
            store.dead_letters_first(DEAD_SHOWN as u64)?,
            store.dead_count()?,
        ))
    });
    let p = problems(s);
    let status = service_status(&p);
    let (totals, checkpoints, dead, dead_total) = match read {
        Some((t, c, d, n)) => (Some(t), c, d, n as usize),
        None => (None, Vec::new(), Vec::new(), 0),
    };
    let sources = source_views(s, &checkpoints);
    let sink = s.stats.sink_health();
    PageData {
        now_ms: now,
        started_ms: s.started_ms,
        timezone: s.cfg.timezone(),
        config_file: s.cfg.file.to_string_lossy().into_owned(),
        service_status: status,
        problems: p
            .major
            .into_iter()
            .map(|m| ("major", m))
            .chain(p.minor.into_iter().map(|m| ("minor", m)))
            .collect(),
        sources,
        totals,
        per_minute: s.rate.per_minute(now),
        sink_kind: format!("{:?}", s.cfg.sink.kind).to_lowercase(),
        sink_connected: sink.connected,
        sink_alert: sink.alert,
        delivered_since_start: crate::stats::Stats::get(&s.stats.delivered),
        dead,
        dead_total,
    }
}

/// HTML-escape text for element content and quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A shell word: quoted when it holds anything but plain path characters.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn local_time(ms: i64, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

/// "3 s", "4 min", "2 h 5 min", "3 d".
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {} min", s / 3600, s / 60 % 60),
        _ => format!("{} d", s / 86_400),
    }
}

/// Bytes as "812 B", "4.2 KiB", "1.3 MiB".
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.1} KiB", f / K)
    } else if f < K * K * K {
        format!("{:.1} MiB", f / K / K)
    } else {
        format!("{:.1} GiB", f / K / K / K)
    }
}

/// The per-minute chart: one bar per minute, the newest on the right.
pub fn chart_svg(per_minute: &[u64]) -> String {
    let (w, h, top, bottom, left) = (640.0_f64, 150.0_f64, 14.0, 20.0, 40.0);
    let max = per_minute.iter().copied().max().unwrap_or(0).max(1);
    let plot_h = h - top - bottom;
    let n = per_minute.len().max(1) as f64;
    let bar_w = (w - left) / n;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="charges delivered per minute, last hour" viewBox="0 0 {w} {h}" width="{w}" height="{h}">"#
    );
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{y0}" stroke="#888"/><line x1="{left}" y1="{y0}" x2="{w}" y2="{y0}" stroke="#888"/><text x="{tx}" y="{ty}" font-size="11" text-anchor="end">{max}</text><text x="{tx}" y="{y0}" font-size="11" text-anchor="end">0</text><text x="{left}" y="{lb}" font-size="11">-60 min</text><text x="{w}" y="{lb}" font-size="11" text-anchor="end">now</text>"##,
        y0 = h - bottom,
        tx = left - 4.0,
        ty = top + 4.0,
        lb = h - 5.0,
    );
    for (i, v) in per_minute.iter().enumerate() {
        let bh = plot_h * (*v as f64) / (max as f64);
        let x = left + i as f64 * bar_w + 1.0;
        let y = h - bottom - bh;
        let ago = per_minute.len() - 1 - i;
        let _ = write!(
            svg,
            r##"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" fill="#2f6fba"><title>{v} delivered, {ago} min ago</title></rect>"##,
            bw = (bar_w - 2.0).max(1.0),
        );
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.st{display:inline-block;padding:.15em .6em;border-radius:.3em;color:#fff;font-weight:bold}\
.operational{background:#2e7d32}.degraded{background:#f9a825}.partial_outage{background:#ef6c00}.major_outage{background:#c62828}\
.major{color:#c62828}.minor{color:#8d6e00}code,pre{background:#eee;padding:.1em .3em;border-radius:.2em}\
.muted{color:#777}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}dd{margin:0}";

pub fn render(d: &PageData) -> String {
    let tz = d.timezone;
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>chargetail: {}</title><style>{STYLE}</style></head><body>",
        esc(d.service_status)
    );
    let _ = write!(
        h,
        "<h1>chargetail <span class=\"st {s}\" id=\"service-status\">{s}</span></h1>\
         <p class=\"muted\">{} · running since {} ({}) · config <code>{}</code> · refreshes every {REFRESH_SECS} s</p>",
        esc(&local_time(d.now_ms, tz)),
        esc(&local_time(d.started_ms, tz)),
        age(d.now_ms - d.started_ms),
        esc(&d.config_file),
        s = esc(d.service_status),
    );
    if d.problems.is_empty() {
        h.push_str("<p id=\"problems\">No problems.</p>");
    } else {
        h.push_str("<ul id=\"problems\">");
        for (sev, text) in &d.problems {
            let _ = write!(h, "<li class=\"{sev}\">{sev}: {}</li>", esc(text));
        }
        h.push_str("</ul>");
    }

    h.push_str("<h2>Sources</h2><table id=\"sources\"><tr><th>source</th><th>file</th><th>position</th><th>size</th><th>lag</th><th>last written</th></tr>");
    for s in &d.sources {
        let label = format!(
            "<b>{}</b><br><span class=\"muted\">{} · {}</span>",
            esc(&s.name),
            esc(&s.profile),
            esc(&s.path)
        );
        if s.files.is_empty() {
            let _ = write!(
                h,
                "<tr class=\"source\" data-source=\"{}\"><td>{label}</td><td colspan=\"5\" class=\"major\">no file followed</td></tr>",
                esc(&s.name)
            );
        }
        for f in &s.files {
            let _ = write!(
                h,
                "<tr class=\"file\" data-source=\"{}\"><td>{label}</td><td><code>{}</code></td><td class=\"n\" data-bytes=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n lag\" data-bytes=\"{}\">{}</td><td>{}</td></tr>",
                esc(&s.name),
                esc(&f.path),
                f.position,
                bytes(f.position),
                bytes(f.size),
                f.lag(),
                bytes(f.lag()),
                f.updated_ms
                    .map(|t| format!("{} ago", age(d.now_ms - t)))
                    .unwrap_or_else(|| "?".into()),
            );
        }
    }
    h.push_str("</table>");

    h.push_str("<h2>Outbox</h2>");
    match &d.totals {
        Some(t) => {
            let _ = write!(
                h,
                "<dl id=\"outbox\"><dt>backlog</dt><dd id=\"backlog\">{}</dd>\
                 <dt>oldest pending</dt><dd id=\"oldest-pending\">{}</dd>\
                 <dt>delivered (kept in the ledger)</dt><dd id=\"delivered\">{}</dd>\
                 <dt>delivered since start</dt><dd id=\"delivered-since-start\">{}</dd>\
                 <dt>last delivery</dt><dd>{}</dd>\
                 <dt>last delivery error</dt><dd>{}</dd></dl>",
                t.pending,
                t.oldest_pending_ms
                    .map(|ms| format!("{} ago ({})", age(d.now_ms - ms), esc(&local_time(ms, tz))))
                    .unwrap_or_else(|| "none".into()),
                t.delivered,
                d.delivered_since_start,
                t.last_delivered_ms
                    .map(|ms| format!("{} ago", age(d.now_ms - ms)))
                    .unwrap_or_else(|| "never".into()),
                t.last_error
                    .as_deref()
                    .map(esc)
                    .unwrap_or_else(|| "none".into()),
            );
        }
        None => h.push_str("<p class=\"major\">state database not readable</p>"),
    }

    let last_hour: u64 = d.per_minute.iter().sum();
    let _ = write!(
        h,
        "<h2>Delivered per minute, last hour</h2><p><span id=\"delivered-last-hour\">{last_hour}</span> charges in the last hour (since start of this daemon).</p><div id=\"chart\">{}</div>",
        chart_svg(&d.per_minute)
    );

    let _ = write!(
        h,
        "<h2>Sink</h2><dl id=\"sink\"><dt>kind</dt><dd>{}</dd><dt>connected</dt><dd id=\"sink-connected\" class=\"{}\">{}</dd><dt>alert</dt><dd id=\"sink-alert\">{}</dd></dl>",
        esc(&d.sink_kind),
        if d.sink_connected { "" } else { "major" },
        if d.sink_connected { "yes" } else { "no" },
        d.sink_alert
            .as_deref()
            .map(|a| format!("<span class=\"major\">{}</span>", esc(a)))
            .unwrap_or_else(|| "none".into()),
    );

    let cfg = shell_word(&d.config_file);
    let _ = write!(
        h,
        "<h2>Dead letters (<span id=\"dead-total\">{}</span>)</h2>",
        d.dead_total
    );
    if d.dead.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table id=\"dead\"><tr><th>id</th><th>kind</th><th>where</th><th>attempts</th><th>reason</th><th>preview</th></tr>");
        for x in &d.dead {
            let _ = write!(
                h,
                "<tr class=\"dead\"><td><code>{}</code></td><td>{}</td><td><code>{}:{}</code></td><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&x.id),
                x.kind,
                esc(&x.file),
                x.line,
                x.attempts,
                esc(&x.reason),
                esc(&x.preview)
            );
        }
        h.push_str("</table>");
        if d.dead_total > d.dead.len() {
            let _ = write!(
                h,
                "<p class=\"muted\">{} more: <code>chargetail dead-letters --config {} list</code></p>",
                d.dead_total - d.dead.len(),
                esc(&cfg)
            );
        }
        let charges: Vec<&str> = d
            .dead
            .iter()
            .filter(|x| x.kind == "charge")
            .map(|x| x.id.as_str())
            .collect();
        if !charges.is_empty() {
            let ids = if charges.len() <= 5 {
                charges.join(" ")
            } else {
                "--all".to_string()
            };
            let _ = write!(
                h,
                "<p>Once the cause is fixed, put the charges back in the outbox:</p><pre id=\"retry-command\">chargetail dead-letters --config {} retry {}</pre>",
                esc(&cfg),
                esc(&ids)
            );
        }
        let mut files: Vec<&str> = d
            .dead
            .iter()
            .filter(|x| x.kind == "line")
            .map(|x| x.file.as_str())
            .collect();
        files.sort_unstable();
        files.dedup();
        if !files.is_empty() {
            let words: Vec<String> = files.iter().map(|f| shell_word(f)).collect();
            let _ = write!(
                h,
                "<p>Unparsable lines are not billed. Correct them in the file (or a copy) and read it again; ids already delivered are skipped:</p><pre id=\"replay-command\">chargetail replay --config {} {}</pre>",
                esc(&cfg),
                esc(&words.join(" "))
            );
        }
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> PageData {
        PageData {
            now_ms: 1_700_000_000_000,
            started_ms: 1_700_000_000_000 - 90_000,
            timezone: chrono_tz::Europe::Berlin,
            config_file: "/etc/chargetail/site a.toml".into(),
            service_status: "operational",
            problems: vec![],
            sources: vec![SourceView {
                name: "pc<1>".into(),
                path: "/var/log/papercut/*.log".into(),
                profile: "transaction-file".into(),
                files: vec![FileView {
                    path: "/var/log/papercut/a.log".into(),
                    position: 2048,
                    size: 4096,
                    updated_ms: Some(1_700_000_000_000 - 3_000),
                }],
            }],
            totals: Some(Totals {
                pending: 7,
                delivered: 120,
                oldest_pending_ms: Some(1_700_000_000_000 - 65_000),
                ..Totals::default()
            }),
            per_minute: (0..60).collect(),
            sink_kind: "amqp".into(),
            sink_connected: true,
            sink_alert: None,
            delivered_since_start: 120,
            dead: vec![DeadLetter {
                id: "chg_abc".into(),
                kind: "charge",
                file: "/var/log/papercut/a.log".into(),
                offset: 10,
                line: 2,
                reason: "rejected: 422 <bad>".into(),
                attempts: 3,
                when_ms: 0,
                preview: "{}".into(),
            }],
            dead_total: 1,
        }
    }

    #[test]
    fn page_shows_the_figures_escaped() {
        let html = render(&data());
        assert!(html.contains("pc&lt;1&gt;"), "{html}");
        assert!(!html.contains("pc<1>"));
        assert!(html.contains("rejected: 422 &lt;bad&gt;"));
        assert!(html.contains("<dd id=\"backlog\">7</dd>"));
        assert!(html.contains("1 min ago") || html.contains("65 s ago"));
        assert!(html.contains("data-bytes=\"2048\""));
        assert!(html.contains(
            "chargetail dead-letters --config &#39;/etc/chargetail/site a.toml&#39; retry chg_abc"
        ));
        assert_eq!(html.matches("class=\"bar\"").count(), 60);
        assert!(html.contains("http-equiv=\"refresh\""));
        // No external asset of any kind.
        assert!(!html.contains("src="));
        assert!(!html.contains("<script"));
        assert!(!html.contains("<link"));
    }

    #[test]
    fn chart_scales_to_its_maximum() {
        let svg = chart_svg(&[0, 5, 10]);
        assert!(svg.contains(">10</text>"));
        assert!(svg.contains("height=\"0.0\""));
        assert_eq!(svg.matches("<rect").count(), 3);
    }

    #[test]
    fn ages_and_sizes_read_well() {
        assert_eq!(age(5_000), "5 s");
        assert_eq!(age(600_000), "10 min");
        assert_eq!(age(3 * 3_600_000 + 120_000), "3 h 2 min");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
    }
}
