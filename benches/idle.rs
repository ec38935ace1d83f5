//! Latency and idleness of `chargetail run` with the stdout sink, beside a
//! baseline measured in the same run (prints figures; not a test):
//!
//!     cargo bench --bench idle          (or scripts/bench.sh idle)
//!
//! One writer appends lines to one file at `CT_IDLE_RATE` lines/s (100)
//! for `CT_IDLE_SECS` s (20), one write(2) per line; two followers read it
//! at the same time: the daemon (stdout sink, default 2 s stat poll, so it
//! must be woken by inotify) and the baseline `tail -F -n0` (coreutils:
//! inotify, no state, no commit: the floor for "line written → line out").
//! Both have their stdout read by this process, which notes when each
//! transaction id comes out. Twice: on a quiet machine, then while a
//! neighbour thread writes 1 MiB and fsyncs a file on the same disk as fast
//! as it can. Then, 12 s after the last line, nothing is appended for
//! `CT_IDLE_WAIT` s (60): the CPU time each used (the threads' schedstat
//! for ns resolution; utime + stime from /proc/PID/stat beside it, in
//! 10 ms ticks), their context switches (wake-ups), and RSS.
//!
//! Every FIGURE line carries the 1-minute load average: the machine may be
//! shared; a figure taken under load says so.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{env_num, figure, pct_ms};
use support::{bin, tx_line, HEADER};

/// When each transaction number came out of a follower's stdout.
type Seen = Arc<Mutex<Vec<Option<Instant>>>>;

struct Follower {
    name: &'static str,
    child: Child,
    seen: Seen,
}

impl Follower {
    /// Start `cmd` with stdout piped; a thread notes each `tx-NNNNNN` seen.
    fn start(name: &'static str, mut cmd: Command, n: usize) -> Follower {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let seen: Seen = Arc::new(Mutex::new(vec![None; n + 1]));
        let out = child.stdout.take().expect("piped stdout");
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                let Some(i) = line
                    .find("tx-")
                    .and_then(|at| line.get(at + 3..at + 9))
                    .and_then(|d| d.parse::<usize>().ok())
                else {
                    continue;
                };
                let mut s = s.lock().unwrap();
                if i < s.len() && s[i].is_none() {
                    s[i] = Some(now);
                }
            }
        });
        Follower { name, child, seen }
    }

    fn has(&self, i: usize) -> bool {
        self.seen.lock().unwrap()[i].is_some()
    }

    /// Write → out latencies (ms) of lines `from..=to`, sorted; and how many
    /// never came out.
    fn latencies(&self, written: &[Option<Instant>], from: usize, to: usize) -> (Vec<f64>, usize) {
        let s = self.seen.lock().unwrap();
        let mut v: Vec<f64> = (from..=to)
            .filter_map(|i| Some((s[i]? - written[i]?).as_secs_f64() * 1000.0))
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let missing = to + 1 - from - v.len();
        (v, missing)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's CPU figures: utime + stime in clock ticks (whole process,
/// exited threads included), per thread (tid → schedstat ns, context
/// switches), VmRSS KiB.
struct Cpu {
    ticks: u64,
    threads: std::collections::HashMap<String, (u64, u64)>,
    rss: u64,
}

fn cpu(pid: u32) -> Cpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let mut threads = std::collections::HashMap::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let p = t.path();
            let ns = std::fs::read_to_string(p.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            let mut switches = 0;
            if let Ok(s) = std::fs::read_to_string(p.join("status")) {
                for l in s.lines() {
                    if l.starts_with("voluntary_ctxt_switches")
                        || l.starts_with("nonvoluntary_ctxt_switches")
                    {
                        switches += l
                            .split_whitespace()
                            .nth(1)
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0);
                    }
                }
            }
            threads.insert(t.file_name().to_string_lossy().into_owned(), (ns, switches));
        }
    }
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    Cpu {
        ticks,
        threads,
        rss,
    }
}

/// (schedstat ns, context switches) between two samples, over the threads
/// alive at both (a thread that exited in between is left out).
fn thread_delta(before: &Cpu, after: &Cpu) -> (u64, u64) {
    let (mut ns, mut sw) = (0, 0);
    for (tid, (n1, s1)) in &after.threads {
        if let Some((n0, s0)) = before.threads.get(tid) {
            ns += n1.saturating_sub(*n0);
            sw += s1.saturating_sub(*s0);
        }
    }
    (ns, sw)
}

/// Writes 1 MiB and fsyncs it, as fast as it can, until stopped.
fn neighbour(dir: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let path = dir.join("neighbour.bin");
    std::thread::spawn(move || {
        let mut f = std::fs::File::create(&path).unwrap();
        let buf = vec![0x5au8; 1 << 20];
        let mut rounds = 0u64;
        while !stop.load(Ordering::Relaxed) {
            f.write_all(&buf).unwrap();
            f.sync_data().unwrap();
            rounds += 1;
            // Keep the file small: rewrite from the start.
            if rounds.is_multiple_of(64) {
                f.set_len(0).unwrap();
                use std::io::Seek;
                f.seek(std::io::SeekFrom::Start(0)).unwrap();
            }
        }
        let _ = std::fs::remove_file(&path);
        rounds
    })
}

/// Append lines `from..=to` at `rate`/s, one write each; note when.
fn write_at(file: &Path, from: usize, to: usize, rate: u64, written: &mut [Option<Instant>]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    let start = Instant::now();
    let every = Duration::from_nanos(1_000_000_000 / rate.max(1));
    for (k, i) in (from..=to).enumerate() {
        let due = start + every * k as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let line = tx_line(i as u64);
        written[i] = Some(Instant::now());
        f.write_all(line.as_bytes()).unwrap();
    }
}

fn wait_all(fs: &[&Follower], to: usize, within: Duration) {
    let t = Instant::now();
    while t.elapsed() < within && !fs.iter().all(|f| f.has(to)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The last few may trail the one checked.
    std::thread::sleep(Duration::from_millis(300));
}

fn report(phase: &str, fs: &[&Follower], written: &[Option<Instant>], from: usize, to: usize) {
    for f in fs {
        let (v, missing) = f.latencies(written, from, to);
        figure(
            &format!("latency.stdout.{phase}.{}", f.name),
            &format!(
                "write→out p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={}, missing {missing})",
                pct_ms(&v, 50.0),
                pct_ms(&v, 99.0),
                v.last().copied().unwrap_or(f64::NAN),
                v.len()
            ),
        );
    }
}

fn main() {
    let rate = env_num("CT_IDLE_RATE", 100);
    let secs = env_num("CT_IDLE_SECS", 20);
    let idle = env_num("CT_IDLE_WAIT", 60);
    let per = (rate * secs) as usize;
    let n = 1 + 2 * per;
    let dir = tempfile::Builder::new()
        .prefix("ct-bench-idle-")
        .tempdir()
        .unwrap();
    let file = dir.path().join("tx.log");
    std::fs::write(&file, HEADER).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"bench\"\npath = \"{}\"\ntimezone = \"Australia/Melbourne\"\n\
             currency = \"AUD\"\n\n[state]\npath = \"{}\"\n\n[sink]\nkind = \"stdout\"\n",
            file.display(),
            dir.path().join("state/state.db").display()
        ),
    )
    .unwrap();
    println!(
        "chargetail idle bench: {rate} lines/s for {secs} s, quiet then beside a disk neighbour; {idle} s idle"
    );
    let mut daemon = Command::new(bin());
    daemon
        .args(["run", "--config"])
        .arg(&cfg)
        .env("CHARGETAIL_LOG", "warn")
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap());
    let mut tail = Command::new("tail");
    tail.args(["-F", "-n", "0", "-s", "2"])
        .arg(&file)
        .stderr(Stdio::null());
    let ct = Follower::start("chargetail", daemon, n);
    let tl = Follower::start("tail-F", tail, n);
    let fs = [&ct, &tl];
    let mut written = vec![None; n + 1];

    // Warm-up: line 0 through both. `tail -n 0` starts at the end of the
    // file once it has opened it: until both show it, write it again (the
    // daemon ignores the copy: same transaction id).
    let t = Instant::now();
    loop {
        write_at(&file, 0, 0, rate, &mut written);
        let again = Instant::now() + Duration::from_secs(2);
        while Instant::now() < again && !fs.iter().all(|f| f.has(0)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if fs.iter().all(|f| f.has(0)) {
            break;
        }
        let missing: Vec<_> = fs.iter().filter(|f| !f.has(0)).map(|f| f.name).collect();
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "warm-up line not out of {missing:?} in 60 s"
        );
    }

    write_at(&file, 1, per, rate, &mut written);
    wait_all(&fs, per, Duration::from_secs(30));
    report("quiet", &fs, &written, 1, per);

    let stop = Arc::new(AtomicBool::new(false));
    let nb = neighbour(dir.path(), stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    write_at(&file, per + 1, 2 * per, rate, &mut written);
    wait_all(&fs, 2 * per, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let rounds = nb.join().unwrap_or(0);
    println!(
        "  neighbour: {rounds} MiB written and fsynced in about {} s",
        secs + 1
    );
    report("neighbour", &fs, &written, per + 1, 2 * per);

    // Idle: first let tokio's idle blocking threads exit (10 s keep-alive),
    // so the window measures the threads that stay.
    std::thread::sleep(Duration::from_secs(12));
    let before: Vec<_> = fs.iter().map(|f| cpu(f.child.id())).collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(idle));
    let wall = t.elapsed().as_secs_f64();
    for (f, b) in fs.iter().zip(before) {
        let a = cpu(f.child.id());
        let ticks = a.ticks.saturating_sub(b.ticks) as f64 / 100.0;
        let (ns, switches) = thread_delta(&b, &a);
        let ns = ns as f64 / 1e9;
        figure(
            &format!("idle.cpu.{}", f.name),
            &format!(
                "{:.4} % of a core over {wall:.0} s (schedstat {ns:.4} s; /proc stat {ticks:.2} s, 10 ms ticks), {:.2} wakeups/s, RSS {:.1} MiB (target <= 0.05 %, <= 20 MB)",
                100.0 * ns / wall,
                switches as f64 / wall,
                a.rss as f64 / 1024.0
            ),
        );
    }
    if !ct.has(2 * per) {
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        println!("  daemon log:\n{log}");
    }
    drop(daemon_keep(ct));
}

/// The daemon, stopped with SIGTERM rather than killed (a clean exit).
fn daemon_keep(mut f: Follower) -> Follower {
    let _ = Command::new("kill")
        .args(["-TERM", &f.child.id().to_string()])
        .status();
    let _ = support::wait_timeout(&mut f.child, Duration::from_secs(10));
    f
}
