//! Every message a test sees is checked against `docs/charge.schema.json`,
//! the schema the documentation publishes. The schema is read and compiled
//! once per test binary.

use std::sync::OnceLock;

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/charge.schema.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let schema: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{path}: not a valid schema: {e}"))
    })
}

/// The reasons `bytes` is not a valid message (empty when it is).
pub fn problems(bytes: &[u8]) -> Vec<String> {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    validator()
        .iter_errors(&value)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect()
}

/// Panics, naming the reasons and the message, unless `bytes` validates.
pub fn check(bytes: &[u8]) {
    let problems = problems(bytes);
    assert!(
        problems.is_empty(),
        "message does not validate against docs/charge.schema.json:\n  {}\nmessage: {}",
        problems.join("\n  "),
        String::from_utf8_lossy(bytes)
    );
}

/// One message line, checked, as JSON.
pub fn message(line: &str) -> serde_json::Value {
    check(line.as_bytes());
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Messages written one a line (a command's or a daemon's stdout), each
/// checked.
pub fn messages(text: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(text).lines().map(message).collect()
}
