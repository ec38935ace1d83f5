//! The config's parsing, defaults, checks and the settings it hands out.

use super::*;
use crate::format::{AmountSign, Profile};

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("/etc/chargetail/config.toml"))
}

const MIN: &str = "[source]\nname='pc'\npath='/x/*.log'\n[state]\npath='s.db'\n";

#[test]
fn minimal_config_gets_defaults_and_resolves_paths() {
    let c = load(MIN).unwrap();
    assert_eq!(c.sink.kind, SinkKind::Stdout);
    assert_eq!(c.state.path, PathBuf::from("/etc/chargetail/s.db"));
    assert_eq!(c.sources[0].max_line_bytes, 65536);
}

#[test]
fn settings_from_config() {
    let src: SourceConfig = toml::from_str(
        "name = 'pc'\npath = '/x'\nprofile = 'print-log'\ntimezone = 'Australia/Melbourne'\n\
         currency = 'AUD'\ndecimal_comma = true\ncolumns = { amount = 13 }\n",
    )
    .unwrap();
    let s = src.format_settings().unwrap();
    assert_eq!(s.profile, Profile::PrintLog);
    assert_eq!((s.delimiter, s.header), (Some(b'\t'), false));
    assert_eq!(s.amount_sign, AmountSign::ChargePositive);
    assert!(s.decimal_comma);
    assert_eq!(s.timezone, chrono_tz::Australia::Melbourne);
    let t = src.format_settings_as(Profile::TransactionFile).unwrap();
    assert_eq!((t.delimiter, t.header), (None, true));
    assert_eq!(t.amount_sign, AmountSign::DebitNegative);
    // The settings parse: a print log line with a decimal comma in column 13.
    let pl = "2026-11-20\t9:14:03 PM\tpc-main\tlevel1-mfd\tmaya.chen@harbourworks.com.au\tAcme Design\tmaya-laptop\tBrief.pdf\t4\t1";
    let mut lines = Vec::new();
    let mut sp = crate::source::LineSplitter::new(65536, 0, 1);
    sp.feed(format!("{pl}\t1\tx\t0,40\n").as_bytes(), &mut lines);
    let mut parser = crate::format::LineParser::new(std::sync::Arc::new(s), "/x/pl.log".into());
    let crate::format::Parsed::Charge(c) = parser.parse(&lines[0]) else {
        panic!("not a charge: {lines:?}");
    };
    assert_eq!(c.amount, Some("0.40".parse().unwrap()));
}

#[test]
fn several_sources() {
    let two = "[[source]]\nname='a'\npath='/x/a/*.log'\ntimezone='Europe/Madrid'\n\
               [[source]]\nname='b'\npath='/x/b/*.log'\ncurrency='AUD'\n[state]\npath='s.db'\n";
    let c = load(two).unwrap();
    let names: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(!c.sources[0].timezone_from_system);
    assert!(c.sources[1].timezone_from_system);
    assert_eq!(c.sources[1].currency, "AUD");
    assert_eq!(c.source(Some("b")).unwrap().path, "/x/b/*.log");
    let e = c.source(None).unwrap_err().to_string();
    assert!(e.contains("--source") && e.contains("\"a\", \"b\""), "{e}");
    let e = c.source(Some("z")).unwrap_err().to_string();
    assert!(e.contains("\"z\""), "{e}");
    // One [source] is one source, the only one.
    let one = load(MIN).unwrap();
    assert_eq!(one.sources.len(), 1);
    assert_eq!(one.source(None).unwrap().name, "pc");
    // An unknown key inside [[source]] is named, not "no variant matched".
    let e = load(&two.replace("currency='AUD'", "curency='AUD'"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("curency"), "{e}");
    // Errors name the source by index and name.
    let e = load(&two.replace("currency='AUD'", "currency='aud'"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[[source]] #2 (\"b\") currency"), "{e}");
}

#[test]
fn sources_must_not_collide() {
    let two = |a: &str, pa: &str, b: &str, pb: &str| {
        load(&format!(
            "[[source]]\nname='{a}'\npath='{pa}'\n[[source]]\nname='{b}'\npath='{pb}'\n\
             [state]\npath='s.db'\n"
        ))
    };
    let e = two("a", "/x/*.log", "a", "/y/*.log")
        .unwrap_err()
        .to_string();
    assert!(e.contains("both are named \"a\""), "{e}");
    let e = two("a", "/x/*.log", "b", "/x/*.log")
        .unwrap_err()
        .to_string();
    assert!(e.contains("the same path"), "{e}");
    let e = two("a", "/x/*.log", "b", "/x/tx.log")
        .unwrap_err()
        .to_string();
    assert!(e.contains("both paths match \"/x/tx.log\""), "{e}");
    let e = two("a", "/x/a*.log", "b", "/x/*.log")
        .unwrap_err()
        .to_string();
    assert!(e.contains("#1 (\"a\") and #2 (\"b\")"), "{e}");
    let e = two("", "/x/*.log", "b", "/y/*.log")
        .unwrap_err()
        .to_string();
    assert!(e.contains("#1 (\"\") name: must not be empty"), "{e}");
    // Relative paths resolve first: "a/*.log" is /etc/chargetail/a/*.log.
    let e = two("a", "a/*.log", "b", "/etc/chargetail/a/x.log")
        .unwrap_err()
        .to_string();
    assert!(e.contains("both paths match"), "{e}");
    // A file on disk both globs match.
    let dir = std::env::temp_dir().join(format!("chargetail-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tx-2026.log"), "").unwrap();
    let (pa, pb) = (
        format!("{}/tx-*", dir.display()),
        format!("{}/*.log", dir.display()),
    );
    let e = two("a", &pa, "b", &pb).unwrap_err().to_string();
    assert!(e.contains("on disk now"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(two("a", "/x/a/*.log", "b", "/x/b/*.log").is_ok());
    assert!(two("a", "/x/*.log", "b", "/x/sub/*.log").is_ok());
}

#[test]
fn errors_name_the_place() {
    let e = load(&format!("{MIN}[sourc]\n")).unwrap_err().to_string();
    assert!(e.contains("sourc"), "{e}");
    let e = load(&MIN.replace("name='pc'", "name='pc'\ntimezone='Mars/Base'"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("timezone") && e.contains("Mars/Base"), "{e}");
    let e = load(&MIN.replace("name='pc'", "name='pc'\ncolumns={ amout = 3 }"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("amout"), "{e}");
    // The back-off keys name the source and the key.
    let two = "[[source]]\nname='a'\npath='/x/a/*.log'\n[[source]]\nname='b'\npath='/x/b/*.log'\n\
               idle_poll_secs=10000\n[state]\npath='s.db'\n";
    let e = load(two).unwrap_err().to_string();
    assert!(
        e.contains("[[source]] #2 (\"b\") idle_poll_secs: must be from 1 to 3600"),
        "{e}"
    );
    let e = load(&MIN.replace("name='pc'", "name='pc'\nidle_after_secs=0"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[source] idle_after_secs"), "{e}");
    let c = load(&MIN.replace("name='pc'", "name='pc'\nidle_after_secs=300")).unwrap();
    let o = c.sources[0].follow_options();
    assert_eq!(o.idle_after, Duration::from_secs(300));
    assert_eq!(o.idle_poll_interval, Duration::from_secs(10));
    let e = load(&format!("{MIN}[sink]\nkind='amqp'\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[sink.amqp]"), "{e}");
}
