//! What every benchmark prints its figures with: one grep-able `FIGURE`
//! line each, with the load average, since the machine may be shared.
//! Included by path (`#[path = "common/mod.rs"]`), not a bench target.

#![allow(dead_code)]

/// A numeric knob from the environment, or its default.
pub fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// The 1-, 5- and 15-minute load averages.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The `p`-th percentile (0-100) of sorted samples, nearest rank: the
/// smallest sample at or above `p` % of them; `None` when there are none.
pub fn pct<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
}

/// [`pct`] of latencies in ms, NaN (printed as such) when there are none.
pub fn pct_ms(sorted: &[f64], p: f64) -> f64 {
    pct(sorted, p).unwrap_or(f64::NAN)
}

/// One result line, with the load at the time.
pub fn figure(name: &str, text: &str) {
    println!("FIGURE {name:<26} {text}   [load {}]", load());
}

/// The messages `chargetail parse` (the binary `bin`) renders for `file`
/// under `cfg`: the exact bytes the daemon would store and send.
pub fn parse_messages(
    bin: &str,
    cfg: &std::path::Path,
    file: &std::path::Path,
) -> std::io::Result<Vec<Vec<u8>>> {
    let out = std::process::Command::new(bin)
        .args(["parse", "--config"])
        .arg(cfg)
        .arg(file)
        .stderr(std::process::Stdio::null())
        .output()?;
    Ok(out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}
