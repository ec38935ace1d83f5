//! An idle daemon sleeps until something is due: it does not turn on a
//! short tick, yet an appended line still wakes it (inotify) and a SIGTERM
//! still stops it at once (the shutdown wakes the sleeping source loop).

mod support;

use std::time::Duration;

use support::*;

#[test]
fn an_idle_daemon_hardly_wakes_and_still_reads_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let file = tx_file(dir.path(), 3);
    let (cfg, port) = http_config(dir.path());
    // A 5 s stat poll: the loop's only periodic wake-up while idle.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("poll_interval_ms = 200", "poll_interval_ms = 5000");
    std::fs::write(&cfg, text).unwrap();
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(3, Duration::from_secs(20)), 3);
    let wakeups = || {
        metric(
            &http_get(port, "/metrics"),
            "chargetail_source_wakeups_total",
        )
        .expect("chargetail_source_wakeups_total")
    };
    // Let the last commit's recount and the first polls pass.
    std::thread::sleep(Duration::from_millis(1500));
    let before = wakeups();
    std::thread::sleep(Duration::from_secs(3));
    let idle = wakeups() - before;
    // At most one stat poll (5 s) in 3 s, give or take a deadline landing
    // in the window; a 250 ms tick would be 12.
    assert!(idle <= 3.0, "{idle} wake-ups in 3 s of idleness");

    append(&file, &tx_line(3));
    assert_eq!(
        d.wait_for(4, Duration::from_secs(20)),
        4,
        "appended line not read"
    );
    let (code, _) = d.stop();
    assert_eq!(code, Some(0), "did not stop cleanly on SIGTERM");
}

/// `idle_after_secs`: past it the file is looked at only every
/// `idle_poll_secs` (here an hour, as is the glob), so only inotify's report
/// of the write can bring the appended line in.
#[test]
fn a_file_idle_past_idle_after_secs_is_read_at_once_on_inotify() {
    let dir = tempfile::tempdir().unwrap();
    let file = tx_file(dir.path(), 2);
    let cfg = write_config(dir.path(), "tx*.log", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "poll_interval_ms = 200",
        "poll_interval_ms = 3600000\nidle_after_secs = 1\nidle_poll_secs = 3600",
    );
    std::fs::write(&cfg, text).unwrap();
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(2, Duration::from_secs(20)), 2);
    // Past idle_after_secs (1 s) with room to spare.
    std::thread::sleep(Duration::from_millis(2500));
    append(&file, &tx_line(2));
    assert_eq!(
        d.wait_for(3, Duration::from_secs(20)),
        3,
        "a line appended to an idle file was not read on inotify"
    );
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
