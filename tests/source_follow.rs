//! Scenario tests of the follower on real files, real inotify.

mod source_common;

use chargetail::source::{Follower, Notice, SourceEvent};
use source_common::*;
use std::time::{Duration, Instant};

#[test]
fn appends_are_read() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"h\na1\n");
    let mut r = Run::new(opts(&dir.join("*.log")));
    r.until("first lines", |r| r.lines(1).len() == 2);
    assert!(r.has_notice(|n| matches!(n, Notice::Opened { generation: 1, .. })));
    append(&tx, b"a2\na3\na4\na5\n");
    r.until("appended lines", |r| r.lines(1).len() == 6);
    assert_eq!(r.lines(1), strs(&["h", "a1", "a2", "a3", "a4", "a5"]));
    // Batches respect max_batch_lines.
    for ev in &r.events {
        if let SourceEvent::Lines { lines, .. } = ev {
            assert!(lines.len() <= 3);
        }
    }
    assert_eq!(r.f.checkpoints().len(), 1);
    assert_eq!(r.f.checkpoints()[0].offset, 17);
}

#[test]
fn partial_line_waits_for_its_end() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"a\nbb");
    let mut r = Run::new(opts(&tx));
    r.until("a", |r| r.lines(1).len() == 1);
    r.settle(Duration::from_millis(60));
    assert_eq!(r.lines(1), strs(&["a"]));
    assert_eq!(r.store[&1].offset, 2);
    append(&tx, b"b");
    r.settle(Duration::from_millis(60));
    assert_eq!(r.lines(1), strs(&["a"]));
    append(&tx, b"b\nc\n");
    r.until("completed line", |r| r.lines(1).len() == 3);
    assert_eq!(r.lines(1), strs(&["a", "bbbb", "c"]));
}

#[test]
fn partial_line_completed_after_restart() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"h\na\npar");
    let mut r = Run::new(opts(&tx));
    r.until("a", |r| r.lines(1).len() == 2);
    r.settle(Duration::from_millis(30));
    assert_eq!(r.store[&1].offset, 4);
    r.restart();
    append(&tx, b"tial\nb\n");
    r.until("rest", |r| r.lines(1).len() == 4);
    assert_eq!(r.lines(1), strs(&["h", "a", "partial", "b"]));
    // The lines handed over before the restart came back as a prefix only.
    assert_eq!(r.gens[&1].prefix, strs(&["h", "a"]));
    r.settle(Duration::from_millis(60));
    assert_eq!(r.lines(1).len(), 4);
}

#[test]
fn rename_and_create_rotation_reads_old_to_its_end_first() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"o1\n");
    let mut r = Run::new(opts(&tx));
    r.until("o1", |r| r.lines(1).len() == 1);
    append(&tx, b"o2\n");
    std::fs::rename(&tx, dir.join("tx.log.1")).unwrap();
    write(&tx, b"n1\n");
    // A late write through the writer's old handle.
    append(&dir.join("tx.log.1"), b"o3\n");
    r.until("new file", |r| r.lines(2).len() == 1);
    assert_eq!(r.lines(1), strs(&["o1", "o2", "o3"]));
    assert_eq!(r.all_lines(), strs(&["o1", "o2", "o3", "n1"]));
    assert!(r.finished(1));
    let pos = |p: &dyn Fn(&Notice) -> bool| r.notices.iter().position(p).unwrap();
    let rotated = pos(&|n| matches!(n, Notice::Rotated { generation: 1, .. }));
    let finished = pos(&|n| matches!(n, Notice::Finished { generation: 1, .. }));
    let opened = pos(&|n| matches!(n, Notice::Opened { generation: 2, .. }));
    assert!(rotated < finished && finished < opened);
    // The finished generation knows where its file went.
    assert_eq!(r.store[&1].path, dir.join("tx.log.1"));
}

#[test]
fn renamed_within_the_glob_is_the_same_generation() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"o1\no2\n");
    let mut r = Run::new(opts(&dir.join("tx*.log")));
    r.until("o", |r| r.lines(1).len() == 2);
    std::fs::rename(&tx, dir.join("tx.1.log")).unwrap();
    write(&tx, b"n1\n");
    r.until("new file", |r| r.lines(2).len() == 1);
    r.settle(Duration::from_millis(150));
    assert_eq!(r.all_lines(), strs(&["o1", "o2", "n1"]));
    assert!(r.finished(1));
    assert_eq!(r.gens.len(), 2, "tx.1.log must not be read again");
    // It grows after being finished: then it is a new generation (read from
    // 0; duplicates go downstream by charge id), never silently skipped.
    append(&dir.join("tx.1.log"), b"late\n");
    r.until("late line", |r| r.lines(3).len() == 3);
    assert_eq!(r.lines(3), strs(&["o1", "o2", "late"]));
}

#[test]
fn new_daily_file() {
    let (_d, dir) = tmp();
    let d1 = dir.join("tx-2026-11-20.log");
    write(&d1, b"h\nd1a\n");
    let mut r = Run::new(opts(&dir.join("tx-*.log")));
    r.until("day 1", |r| r.lines(1).len() == 2);
    let d2 = dir.join("tx-2026-11-21.log");
    write(&d2, b"h\nd2a\n");
    r.until("day 2", |r| r.lines(2).len() == 2);
    append(&d1, b"d1b\n");
    append(&d2, b"d2b\n");
    r.until("both", |r| r.lines(1).len() == 3 && r.lines(2).len() == 3);
    assert!(!r.finished(1));
}

#[test]
fn copy_then_truncate() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"l1\nl2\nl3\n");
    let mut r = Run::new(opts(&dir.join("*.log")));
    r.until("l", |r| r.lines(1).len() == 3);
    append(&tx, b"l4\nl5\n");
    std::fs::copy(&tx, dir.join("tx-copy.log")).unwrap();
    truncate(&tx, 0);
    append(&tx, b"n1\n");
    r.until("all", |r| {
        let all = r.all_lines();
        ["l1", "l2", "l3", "l4", "l5", "n1"]
            .iter()
            .all(|l| all.contains(&l.to_string()))
    });
    assert!(r.has_notice(|n| matches!(n, Notice::Truncated { offset: 9, .. })));
    assert!(r.finished(1));
}

#[test]
fn copy_then_truncate_regrown_past_the_old_offset() {
    // Truncated and written again beyond our position before we looked:
    // only the first bytes tell. The follower must not go on at the old
    // offset in the middle of new content.
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"old-1\nold-2\n");
    let mut r = Run::polling(opts(&dir.join("*.log")));
    r.until("old", |r| r.lines(1).len() == 2);
    append(&tx, b"old-3\n");
    std::fs::copy(&tx, dir.join("tx-copy.log")).unwrap();
    truncate(&tx, 0);
    append(&tx, b"NEW-1\nNEW-2\nNEW-3\nNEW-4\n");
    r.until("new", |r| r.all_lines().contains(&"NEW-4".to_string()));
    r.settle(Duration::from_millis(60));
    assert!(r.has_notice(|n| matches!(
        n,
        Notice::Truncated {
            offset: 12,
            size: 24,
            ..
        }
    )));
    let all = r.all_lines();
    for l in [
        "old-1", "old-2", "old-3", "NEW-1", "NEW-2", "NEW-3", "NEW-4",
    ] {
        assert!(all.contains(&l.to_string()), "{l} missing: {all:?}");
    }
    // Nothing but whole lines of either content.
    assert!(all.iter().all(|l| l.len() == 5));
}

#[test]
fn plain_truncation() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"a1\na2\n");
    let mut r = Run::new(opts(&tx));
    r.until("a", |r| r.lines(1).len() == 2);
    truncate(&tx, 0);
    append(&tx, b"b1\n");
    r.until("b", |r| r.lines(2).len() == 1);
    assert!(r.has_notice(|n| matches!(n, Notice::Truncated { offset: 6, .. })));
    assert!(r.finished(1));
    assert_eq!(r.lines(2), strs(&["b1"]));
    append(&tx, b"b2\n");
    r.until("b2", |r| r.lines(2).len() == 2);
}

#[test]
fn delete_and_recreate() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"a1\n");
    let mut r = Run::new(opts(&tx));
    r.until("a1", |r| r.lines(1).len() == 1);
    append(&tx, b"a2\n");
    std::fs::remove_file(&tx).unwrap();
    write(&tx, b"b1\n");
    r.until("b1", |r| r.lines(2).len() == 1);
    assert_eq!(r.all_lines(), strs(&["a1", "a2", "b1"]));
    assert!(r.has_notice(|n| matches!(n, Notice::Finished { generation: 1, .. })));
}

#[test]
fn deleted_file_is_read_to_its_end_and_closed() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"a1\n");
    let mut r = Run::new(opts(&tx));
    r.until("a1", |r| r.lines(1).len() == 1);
    let mut w = std::fs::OpenOptions::new().append(true).open(&tx).unwrap();
    std::fs::remove_file(&tx).unwrap();
    use std::io::Write;
    w.write_all(b"a2\n").unwrap();
    r.until("finished", |r| r.finished(1));
    assert_eq!(r.lines(1), strs(&["a1", "a2"]));
    drop(w);
    // No handle kept on the deleted file.
    let held = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|t| t.to_string_lossy() == format!("{} (deleted)", tx.display()));
    assert!(!held);
}

#[test]
fn inode_reused_in_place_is_a_new_generation() {
    // Same inode, truncated and rewritten with other first bytes, longer than
    // before: only the fingerprint tells.
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"first-a\nfirst-b\n");
    let ino = ino(&tx);
    let mut r = Run::polling(opts(&tx));
    r.until("first", |r| r.lines(1).len() == 2);
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&tx)
        .unwrap();
    append(&tx, b"other-1\nother-2\nother-3\n");
    assert_eq!(source_common::ino(&tx), ino);
    r.until("other", |r| r.lines(2).len() == 3);
    assert_eq!(r.lines(2), strs(&["other-1", "other-2", "other-3"]));
    assert!(r.finished(1));
}

#[test]
fn inode_reused_by_a_new_file() {
    // ext4 hands a freed inode to the next file created: once the follower
    // has finished and closed a deleted file, a new file may get its
    // (dev, ino). It must be read as a new generation.
    let (_d, dir) = tmp();
    let mut r = Run::new(opts(&dir.join("*.log")));
    for i in 0..20 {
        let a = dir.join(format!("a{i}.log"));
        write(&a, format!("same header\nline a{i}\n").as_bytes());
        r.until("a", |r| r.all_lines().contains(&format!("line a{i}")));
        let old = ino(&a);
        std::fs::remove_file(&a).unwrap();
        let gens = r.gens.len();
        r.until("closed", |r| {
            r.store.values().filter(|c| c.finished).count() == gens
        });
        let b = dir.join(format!("b{i}.log"));
        write(&b, format!("same header\nline b{i} longer\n").as_bytes());
        r.until("b", |r| {
            r.all_lines().contains(&format!("line b{i} longer"))
        });
        if ino(&b) == old {
            let g = r.store.values().last().unwrap();
            assert_eq!((g.ino, g.finished), (old, false));
            assert_eq!(
                r.lines(g.generation),
                vec!["same header".to_string(), format!("line b{i} longer")]
            );
            return;
        }
        std::fs::remove_file(&b).unwrap();
        let gens = r.gens.len();
        r.until("closed b", |r| {
            r.store.values().filter(|c| c.finished).count() == gens
        });
    }
    eprintln!("inode never reused on this filesystem; the files were read anyway");
}

#[test]
fn identical_first_lines_are_two_generations() {
    let (_d, dir) = tmp();
    write(&dir.join("a.log"), b"time\tuser\tamount\nsame\n");
    write(&dir.join("b.log"), b"time\tuser\tamount\nsame\n");
    let mut r = Run::new(opts(&dir.join("*.log")));
    r.until("both", |r| r.lines(1).len() == 2 && r.lines(2).len() == 2);
    assert_eq!(r.lines(1), r.lines(2));
}

#[test]
fn tiny_file_grows_and_stays_one_generation() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"h");
    let mut r = Run::new(opts(&tx));
    r.until("opened", |r| r.store.contains_key(&1));
    assert_eq!(r.store[&1].fp_len, 1);
    append(&tx, b"\n");
    r.until("h", |r| r.lines(1).len() == 1);
    let mut want = vec!["h".to_string()];
    for i in 0..100 {
        let l = format!("line number {i:04}");
        append(&tx, format!("{l}\n").as_bytes());
        want.push(l);
    }
    r.until("all", |r| r.lines(1).len() == 101);
    assert_eq!(r.lines(1), want);
    assert_eq!(r.gens.len(), 1);
    assert_eq!(r.store[&1].fp_len, 1024);
}

#[test]
fn fingerprint_growth_alone_is_persisted() {
    // A partial line grows the fingerprint without any complete line: a
    // checkpoint-only event carries it.
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"ab");
    let mut r = Run::polling(opts(&tx));
    r.until("opened", |r| r.store.contains_key(&1));
    append(&tx, b"cdef");
    r.until("grown", |r| r.store[&1].fp_len == 6);
    assert_eq!(r.store[&1].offset, 0);
    assert!(r.lines(1).is_empty());
}

#[test]
fn down_while_rotated() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"o1\no2\n");
    let mut r = Run::new(opts(&tx));
    r.until("o", |r| r.lines(1).len() == 2);
    r.f = Follower::new_polling(opts(&dir.join("nothing")), Vec::new()).unwrap(); // "down"
    append(&tx, b"o3\n");
    std::fs::rename(&tx, dir.join("tx.log.2026-11-20")).unwrap();
    write(&tx, b"n1\n");
    r.restart();
    r.until("new", |r| r.lines(2).len() == 1);
    assert_eq!(r.lines(1), strs(&["o1", "o2", "o3"]));
    assert_eq!(r.gens[&1].prefix, strs(&["o1", "o2"]));
    assert_eq!(r.all_lines(), strs(&["o1", "o2", "o3", "n1"]));
    assert!(r.finished(1));
    assert!(r.has_notice(|n| matches!(n, Notice::Rotated { generation: 1, .. })));
}

#[test]
fn down_while_deleted_is_lost_and_said_so() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"o1\n");
    let mut r = Run::new(opts(&tx));
    r.until("o", |r| r.lines(1).len() == 1);
    r.f = Follower::new_polling(opts(&dir.join("nothing")), Vec::new()).unwrap();
    // Gone from the directory; a link elsewhere keeps its inode from being
    // reused (a new file reusing it would be the old one truncated).
    let (_keep_dir, keep) = tmp();
    std::fs::hard_link(&tx, keep.join("kept")).unwrap();
    std::fs::remove_file(&tx).unwrap();
    write(&tx, b"n1\n");
    r.restart();
    r.until("new", |r| r.lines(2).len() == 1);
    assert!(r.has_notice(|n| matches!(n, Notice::Lost { generation: 1, .. })));
    assert!(r.finished(1));
}

#[test]
fn truncated_while_down() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"o1\no2\n");
    let mut r = Run::new(opts(&tx));
    r.until("o", |r| r.lines(1).len() == 2);
    r.f = Follower::new_polling(opts(&dir.join("nothing")), Vec::new()).unwrap();
    truncate(&tx, 0);
    append(&tx, b"n1\n");
    r.restart();
    r.until("new", |r| r.lines(2).len() == 1);
    assert!(r.has_notice(|n| matches!(n, Notice::Truncated { .. })));
    assert!(r.gens[&1].prefix.is_empty(), "no prefix from other content");
}

#[test]
fn long_line_is_marked_and_reading_goes_on() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    let mut o = opts(&tx);
    o.max_line_bytes = 100;
    let long = "x".repeat(5000);
    write(&tx, format!("a\n{long}\nb\n").as_bytes());
    let mut r = Run::new(o);
    r.until("b", |r| r.lines(1).len() == 3);
    let g = &r.gens[&1];
    assert_eq!(g.lines[1].len(), 100);
    assert_eq!(g.too_long, vec![None, Some(5000), None]);
    assert_eq!(g.lines[2], "b");
}

#[test]
fn poll_alone_finds_appends_and_new_files() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"a1\n");
    let mut o = opts(&dir.join("*.log"));
    o.poll_interval = Duration::from_millis(100);
    let mut r = Run::polling(o);
    r.poll();
    assert_eq!(r.lines(1), strs(&["a1"]));
    append(&tx, b"a2\n");
    // No waiting at all: the open handle is stat'ed on every poll.
    r.poll();
    assert_eq!(r.lines(1), strs(&["a1", "a2"]));
    write(&dir.join("other.log"), b"b1\n");
    // wait() with a long timeout still returns when the stat poll is due.
    let t = Instant::now();
    r.f.wait(Duration::from_secs(10));
    assert!(t.elapsed() < Duration::from_secs(2));
    r.poll();
    assert_eq!(r.lines(2), strs(&["b1"]));
}

#[test]
fn wait_returns_soon_after_an_append() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"a1\n");
    let mut o = opts(&tx);
    // Only inotify can wake it up early.
    o.poll_interval = Duration::from_secs(60);
    let mut r = Run::new(o);
    r.poll();
    assert_eq!(r.lines(1).len(), 1);
    let path = tx.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        append(&path, b"a2\n");
    });
    let t = Instant::now();
    r.f.wait(Duration::from_secs(5));
    let waited = t.elapsed();
    writer.join().unwrap();
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    r.poll();
    assert_eq!(r.lines(1), strs(&["a1", "a2"]));
    // And our own reads do not wake it (every poll reads and stats).
    r.f.wait(Duration::from_millis(20));
    r.poll();
    let t = Instant::now();
    r.f.wait(Duration::from_millis(300));
    assert!(t.elapsed() >= Duration::from_millis(250));
}

#[test]
fn new_file_noticed_by_inotify() {
    let (_d, dir) = tmp();
    let mut o = opts(&dir.join("*.log"));
    o.poll_interval = Duration::from_secs(60);
    let mut r = Run::new(o);
    r.poll();
    let p = dir.join("tx.log");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        write(&p, b"x\n");
    });
    let t = Instant::now();
    r.f.wait(Duration::from_secs(5));
    writer.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    r.until("x", |r| r.lines(1).len() == 1);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn unreadable_file_is_reported_once_and_others_go_on() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, dir) = tmp();
    let bad = dir.join("bad.log");
    write(&bad, b"secret\n");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&bad).is_ok() {
        // Root ignores permissions, not a write-only sysfs attribute.
        std::fs::remove_file(&bad).unwrap();
        let wo = [
            "/sys/bus/pci/rescan",
            "/sys/bus/platform/uevent",
            "/sys/bus/cpu/uevent",
        ]
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok() && std::fs::File::open(p).is_err());
        let Some(wo) = wo else {
            eprintln!("no way to make an unreadable file here; skipped");
            return;
        };
        std::os::unix::fs::symlink(wo, &bad).unwrap();
    }
    write(&dir.join("good.log"), b"g1\n");
    let mut r = Run::new(opts(&dir.join("*.log")));
    r.until("good", |r| r.all_lines() == strs(&["g1"]));
    append(&dir.join("good.log"), b"g2\n");
    r.settle(Duration::from_millis(120));
    assert_eq!(r.all_lines(), strs(&["g1", "g2"]));
    let n = r
        .notices
        .iter()
        .filter(|n| matches!(n, Notice::Unreadable { .. }))
        .count();
    assert_eq!(n, 1, "{:?}", r.notices);
}

#[test]
fn many_files_few_handles() {
    let (_d, dir) = tmp();
    let mut r = Run::polling(opts(&dir.join("*.log")));
    r.f.set_max_open_files(1);
    for i in 0..4 {
        write(
            &dir.join(format!("f{i}.log")),
            format!("f{i}-1\n").as_bytes(),
        );
    }
    r.until("all", |r| r.all_lines().len() == 4);
    for i in 0..4 {
        append(
            &dir.join(format!("f{i}.log")),
            format!("f{i}-2\n").as_bytes(),
        );
    }
    r.until("again", |r| r.all_lines().len() == 8);
    // A closed one renamed away is found again by identity.
    append(&dir.join("f0.log"), b"f0-3\n");
    std::fs::rename(dir.join("f0.log"), dir.join("f0.old")).unwrap();
    r.until("f0-3", |r| r.all_lines().contains(&"f0-3".to_string()));
    assert_eq!(r.all_lines().len(), 9);
}

#[test]
fn bad_pattern_is_an_error() {
    let o = opts(std::path::Path::new("/tmp/[x.log"));
    assert!(Follower::new(o, Vec::new()).is_err());
}

#[test]
fn follower_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<Follower>();
}

#[test]
fn wildcard_directories_are_watched_recursively() {
    let (_d, dir) = tmp();
    let mut o = opts(&dir.join("*").join("tx.log"));
    o.poll_interval = Duration::from_secs(60);
    let mut r = Run::new(o);
    r.poll();
    let sub = dir.join("server-a");
    std::fs::create_dir(&sub).unwrap();
    write(&sub.join("tx.log"), b"a1\n");
    let t = Instant::now();
    r.until("a1", |r| r.lines(1) == strs(&["a1"]));
    append(&sub.join("tx.log"), b"a2\n");
    r.until("a2", |r| r.lines(1).len() == 2);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn catching_up_is_bounded_per_poll() {
    // Many files far behind (a first start, or after a restart with prefix
    // re-reads): each poll hands over a bounded share, the rest follows.
    let (_d, dir) = tmp();
    let mut want = 0;
    for f in 0..10 {
        let body: String = (0..50).map(|i| format!("f{f}-{i}\n")).collect();
        write(&dir.join(format!("f{f}.log")), body.as_bytes());
        want += 50;
    }
    let mut r = Run::polling(opts(&dir.join("*.log")));
    let mut polls = 0;
    while r.all_lines().len() < want {
        let before = r.events.len();
        r.poll();
        let batches = r.events[before..]
            .iter()
            .filter(|e| matches!(e, SourceEvent::Lines { lines, .. } if !lines.is_empty()))
            .count();
        assert!(batches <= 16, "{batches} batches in one poll");
        polls += 1;
        assert!(polls < 200);
        // Work left means wait() does not sleep.
        let t = Instant::now();
        r.f.wait(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    assert!(polls > 5);
    r.restart();
    let mut prefix = 0;
    for _ in 0..200 {
        r.poll();
        prefix = r.gens.values().map(|g| g.prefix.len()).sum::<usize>();
        if prefix == want {
            break;
        }
    }
    assert_eq!(prefix, want);
    assert_eq!(r.all_lines().len(), want);
}

#[test]
fn rotated_file_ending_in_a_partial_line() {
    let (_d, dir) = tmp();
    let tx = dir.join("tx.log");
    write(&tx, b"o1\no2-cut-sh");
    let mut r = Run::new(opts(&tx));
    r.until("o1", |r| r.lines(1).len() == 1);
    std::fs::rename(&tx, dir.join("tx.log.1")).unwrap();
    write(&tx, b"n1\n");
    r.until("n1", |r| r.lines(2).len() == 1);
    assert_eq!(r.all_lines(), strs(&["o1", "n1"]));
    assert!(r.has_notice(|n| matches!(
        n,
        Notice::Unterminated {
            generation: 1,
            offset: 3,
            len: 9,
            ..
        }
    )));
    assert_eq!(r.store[&1].offset, 3);
}
