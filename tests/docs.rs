//! The documentation in `docs/` stands on its own and stays true: links
//! resolve inside the repository, the AsyncAPI document parses and points at
//! the schema that exists, and every key of the example config is in the
//! config reference.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            files.push(e.path());
        }
    }
    files.sort();
    files
}

/// `[text](target)` link targets in a markdown text.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn links_stay_inside_the_repository_and_resolve() {
    let files = markdown_files();
    assert!(files.len() >= 8, "docs missing: {files:?}");
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        assert!(
            !text.contains("../shared") && !text.contains("CONTRACT.md"),
            "{name} points outside the repository"
        );
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let path = link.split('#').next().unwrap_or("");
            if path.is_empty() {
                continue;
            }
            let target = file.parent().unwrap().join(path);
            assert!(
                target.exists(),
                "{name}: link {link:?} points at nothing ({})",
                target.display()
            );
            assert!(
                target.canonicalize().unwrap().starts_with(root()),
                "{name}: link {link:?} leaves the repository"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links checked");
}

/// Every `$ref` in `v`, with the JSON pointer where it sits.
fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(s) = x.as_str() {
                        out.push((at.to_string(), s.to_string()));
                    }
                } else {
                    refs(x, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                refs(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn asyncapi_parses_and_references_the_schema_that_exists() {
    let doc: Value = serde_yaml::from_str(&read("docs/asyncapi.yaml")).expect("asyncapi.yaml");
    assert_eq!(doc["asyncapi"], "3.0.0");
    let mut all = Vec::new();
    refs(&doc, "", &mut all);
    let mut external = Vec::new();
    for (at, r) in &all {
        if let Some(pointer) = r.strip_prefix('#') {
            assert!(
                doc.pointer(pointer).is_some(),
                "{at}: $ref {r} resolves to nothing"
            );
        } else {
            let file = Path::new("docs").join(r.split('#').next().unwrap());
            assert!(root().join(&file).is_file(), "{at}: $ref {r}: no such file");
            external.push(file);
        }
    }
    // Both messages carry the published schema, and it is the schema the
    // tests validate every message with (valid JSON Schema).
    let schema = Path::new("docs").join("./charge.schema.json");
    assert_eq!(
        external.iter().filter(|f| **f == schema).count(),
        2,
        "{external:?}"
    );
    let s: Value = serde_json::from_str(&read("docs/charge.schema.json")).unwrap();
    assert!(jsonschema::draft202012::new(&s).is_ok());

    // The two interfaces, with what the sinks really put on the wire.
    let ops = &doc["operations"];
    let amqp = &ops["publishCharge"]["bindings"]["amqp"];
    assert_eq!(amqp["deliveryMode"], 2);
    assert_eq!(amqp["mandatory"], true);
    assert_eq!(ops["postCharge"]["bindings"]["http"]["method"], "POST");
    let comp = &doc["components"];
    assert_eq!(
        comp["messages"]["chargeAmqp"]["contentType"],
        "application/cloudevents+json"
    );
    let wh = comp["schemas"]["webhookHeaders"]["properties"]
        .as_object()
        .unwrap();
    for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert!(wh.contains_key(h), "webhook header {h}");
    }
    let ce = comp["schemas"]["amqpHeaders"]["properties"]
        .as_object()
        .unwrap();
    for h in ["id", "source", "type", "subject", "time", "specversion"] {
        assert!(ce.contains_key(&format!("cloudEvents_{h}")), "header {h}");
    }
    let props = &comp["messages"]["chargeAmqp"]["x-amqp-properties"];
    assert_eq!(props["content_type"], "application/cloudevents+json");
    assert_eq!(props["app_id"], "chargetail");
}

fn keys(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
    for (k, v) in t {
        out.push(k.clone());
        if let toml::Value::Table(sub) = v {
            keys(&format!("{prefix}{k}."), sub, out);
        }
    }
}

#[test]
fn every_key_of_the_example_config_is_in_the_reference() {
    let example: toml::Table = read("packaging/config.toml").parse().unwrap();
    // The commented-out keys count too: uncomment `# key = …` lines.
    let uncommented: String = read("packaging/config.toml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
        })
        .map(|l| l.split_once(" = ").unwrap().0.to_string() + " = 1\n")
        .collect();
    let extra: toml::Table = uncommented.parse().unwrap_or_default();
    let mut all = Vec::new();
    keys("", &example, &mut all);
    keys("", &extra, &mut all);
    let reference = read("docs/config.md");
    for k in all {
        assert!(
            reference.contains(&format!("`{k}`")) || reference.contains(&format!("[{k}]")),
            "docs/config.md does not document `{k}`"
        );
    }
}
