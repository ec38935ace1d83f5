//! The Debian package: `scripts/package.sh` builds it and it holds what an
//! operator needs — a stripped binary that runs, a man page for every page
//! the main page names, the systemd unit, sysusers and tmpfiles snippets,
//! the config as a conffile, completions and the docs.
//!
//! A release build takes minutes on a CI machine, so this test packages the
//! binary `cargo test` already built (`CT_PACKAGE_BIN`): cargo-deb strips it
//! as it strips the release one (`--strip`), and the release profile itself
//! is checked to strip too. scripts/package.sh is otherwise run as is.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text
}

/// `chargetail\-run(1)` → `chargetail-run`.
fn named_pages(roff: &str) -> BTreeSet<String> {
    let text = roff.replace("\\-", "-");
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("(1)") {
        let name: String = text[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if name.starts_with("chargetail") {
            out.insert(name);
        }
    }
    out
}

#[test]
fn release_profile_ships_no_debug_info() {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let release = &manifest["profile"]["release"];
    assert_eq!(release["strip"].as_bool(), Some(true), "{release:?}");
    assert_eq!(release["debug"].as_bool(), Some(false), "{release:?}");
    // Benchmarks keep symbols for perf.
    assert_eq!(manifest["profile"]["bench"]["debug"].as_integer(), Some(1));
}

#[test]
fn the_package_holds_a_stripped_binary_every_man_page_the_unit_and_the_config() {
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("target");
    let built = Command::new("bash")
        .arg(root().join("scripts/package.sh"))
        .env("CT_PACKAGE_BIN", env!("CARGO_BIN_EXE_chargetail"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run scripts/package.sh");
    assert!(
        built.status.success(),
        "scripts/package.sh: {}\n{}",
        built.status,
        String::from_utf8_lossy(&built.stderr)
    );
    let debs: Vec<_> = std::fs::read_dir(target.join("debian"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = &debs[0];

    // Control: name, dependencies, the config as a conffile.
    let info = run(Command::new("dpkg-deb").arg("-I").arg(deb));
    assert!(info.contains("Package: chargetail"), "{info}");
    assert!(info.contains("Depends: libc6"), "{info}");
    let control = work.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(conffiles
        .lines()
        .any(|l| l == "/etc/chargetail/config.toml"));
    assert!(control.join("postinst").is_file());

    // Contents.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    let files: BTreeSet<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    for f in [
        "/usr/bin/chargetail",
        "/usr/lib/systemd/system/chargetail.service",
        "/usr/lib/systemd/system/chargetail@.service",
        "/usr/share/doc/chargetail/grafana/chargetail.json",
        "/usr/lib/sysusers.d/chargetail.conf",
        "/usr/lib/tmpfiles.d/chargetail.conf",
        "/etc/chargetail/config.toml",
        "/usr/share/bash-completion/completions/chargetail",
        "/usr/share/zsh/vendor-completions/_chargetail",
        "/usr/share/fish/vendor_completions.d/chargetail.fish",
        "/usr/share/doc/chargetail/README.md",
        "/usr/share/doc/chargetail/docs/consumer.md",
        "/usr/share/doc/chargetail/docs/charge.schema.json",
        "/usr/share/doc/chargetail/docs/asyncapi.yaml",
    ] {
        assert!(
            files.contains(f),
            "{f} missing from the package:\n{listing}"
        );
    }
    let config_line = listing
        .lines()
        .find(|l| l.ends_with("/etc/chargetail/config.toml"))
        .unwrap();
    assert!(config_line.starts_with("-rw-r-----"), "{config_line}");

    let tree = work.path().join("tree");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree));

    // The binary: stripped, and it runs.
    let bin = tree.join("usr/bin/chargetail");
    let kind = run(Command::new("file").arg(&bin));
    assert!(
        kind.contains(", stripped") && !kind.contains("not stripped"),
        "{kind}"
    );
    let size = std::fs::metadata(&bin).unwrap().len();
    let original = std::fs::metadata(env!("CARGO_BIN_EXE_chargetail"))
        .unwrap()
        .len();
    assert!(size < original / 2, "{size} bytes of {original}");
    let version = run(Command::new(&bin).arg("--version"));
    assert!(version.starts_with("chargetail "), "{version}");

    // Every man page a shipped page names is shipped, from the main page
    // down (chargetail-run(1), chargetail-dead-letters-list(1), …).
    let man = tree.join("usr/share/man/man1");
    let main = gunzip(&man.join("chargetail.1.gz"));
    assert!(main.contains(".TH chargetail 1"));
    let mut todo: Vec<String> = named_pages(&main).into_iter().collect();
    let mut seen = BTreeSet::new();
    while let Some(page) = todo.pop() {
        if !seen.insert(page.clone()) {
            continue;
        }
        let path = man.join(format!("{page}.1.gz"));
        assert!(path.is_file(), "{page}(1) is named but not shipped");
        todo.extend(named_pages(&gunzip(&path)));
    }
    for cmd in ["run", "replay", "parse", "status", "dead-letters", "check"] {
        assert!(
            seen.contains(&format!("chargetail-{cmd}")),
            "chargetail-{cmd}(1) not named by the main page: {seen:?}"
        );
    }
    assert!(seen.contains("chargetail-dead-letters-retry"), "{seen:?}");
    let run_page = gunzip(&man.join("chargetail-run.1.gz"));
    assert!(run_page.contains("config"), "{run_page}");
}
