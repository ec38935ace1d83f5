//! Idle files are looked at less often (`idle_after`, `idle_poll_interval`)
//! and a write to one is still read after the back-off. Real files; the
//! polling-only follower, as on NFS where inotify is silent. (With inotify:
//! tests/idle.rs.)

mod source_common;

use source_common::*;
use std::time::Duration;

fn idle_opts(pattern: &std::path::Path) -> chargetail::source::FollowOptions {
    let mut o = opts(pattern);
    o.idle_after = Duration::from_millis(200);
    o.idle_poll_interval = Duration::from_millis(2500);
    o
}

/// `tx` holds "h", "a1": read them, let `idle_for` (past idle_after) pass,
/// then no poll looks at the file until its back-off is due; a line
/// appended meanwhile is read once it is.
fn read_after_the_back_off(r: &mut Run, tx: &std::path::Path, idle_for: Duration) {
    r.until("first lines", |r| r.lines(1).len() == 2);
    r.settle(idle_for);
    let looks = r.f.looks();
    for _ in 0..20 {
        r.poll();
    }
    assert_eq!(
        r.f.looks(),
        looks,
        "an idle file was looked at on every poll"
    );
    append(tx, b"a2\n");
    r.poll();
    assert_eq!(r.lines(1).len(), 2, "read before its back-off was due");
    // Still found: the waits end when its look is due.
    r.until("the line written while idle", |r| r.lines(1).len() == 3);
    assert_eq!(r.lines(1), strs(&["h", "a1", "a2"]));
}

#[test]
fn an_idle_file_is_looked_at_after_the_back_off_and_its_lines_read() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"h\na1\n");
    let mut r = Run::polling(idle_opts(&dir.join("*.log")));
    read_after_the_back_off(&mut r, &tx, Duration::from_millis(400));
    // Grown: no longer idle, looked at on every poll again.
    let looks = r.f.looks();
    for _ in 0..5 {
        r.poll();
    }
    assert_eq!(r.f.looks(), looks + 5);
}

#[test]
fn a_busy_file_does_not_make_idle_ones_looked_at() {
    let (_d, dir) = tmp();
    let (busy, quiet) = (dir.join("a.log"), dir.join("b.log"));
    write(&busy, b"h\n");
    write(&quiet, b"h\nq1\n");
    let mut r = Run::polling(idle_opts(&dir.join("*.log")));
    r.until("both files", |r| r.all_lines().len() == 3);
    // Keep `busy` growing while `quiet` goes idle.
    for n in 0..8 {
        append(&busy, format!("b{n}\n").as_bytes());
        r.settle(Duration::from_millis(60));
    }
    let looks = r.f.looks();
    for n in 0..10 {
        append(&busy, format!("c{n}\n").as_bytes());
        r.poll();
    }
    // One look per poll: `busy`'s only.
    assert_eq!(r.f.looks(), looks + 10);
    assert_eq!(r.all_lines().len(), 3 + 8 + 10);
    // A write to the idle one is still read.
    append(&quiet, b"q2\n");
    r.until("the idle file's new line", |r| {
        r.all_lines().iter().any(|l| l == "q2")
    });
}

/// The back-off as `[source] idle_after_secs` / `idle_poll_secs` configure
/// it: the follower the daemon would build for this source, without inotify.
#[test]
fn the_configured_back_off_still_reads_an_idle_file_on_the_slower_poll() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"h\na1\n");
    let text = format!(
        "[source]\nname = 'pc'\npath = '{}/*.log'\npoll_interval_ms = 50\n\
         idle_after_secs = 1\nidle_poll_secs = 3\n[state]\npath = 's.db'\n",
        dir.display()
    );
    let cfg = chargetail::config::Config::from_toml(&text, &dir.join("c.toml")).unwrap();
    let o = cfg.sources[0].follow_options();
    assert_eq!(
        (o.idle_after, o.idle_poll_interval),
        (Duration::from_secs(1), Duration::from_secs(3))
    );
    let mut r = Run::polling(o);
    read_after_the_back_off(&mut r, &tx, Duration::from_millis(1300));
}
