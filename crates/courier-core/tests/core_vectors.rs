//! Runs the shared vectors for frames, events, close codes and connection transcripts
//! through `courier_core::conformance`, the same entry points the bindings expose.

use courier_core::conformance::{TranscriptRunner, close_action, decode_frame, validate_event};
use serde_json::Value;

fn vectors(name: &str) -> Vec<Value> {
    let path = format!("{}/../../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["cases"].as_array().expect("cases").clone()
}

fn check_all(file: &str, run: impl Fn(&Value) -> Value, expected: impl Fn(&Value) -> Value) {
    let cases = vectors(file);
    assert!(!cases.is_empty());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let (got, want) = (run(case), expected(case));
            (got != want).then(|| format!("{}: expected {want}, got {got}", case["name"]))
        })
        .collect();
    assert!(failures.is_empty(), "{file}:\n{}", failures.join("\n"));
}

#[test]
fn frames() {
    check_all("frames.json", decode_frame, |c| c["expect"].clone());
}

#[test]
fn events() {
    check_all(
        "events.json",
        |c| {
            let mut v = validate_event(c);
            if let Some(m) = v.as_object_mut() {
                m.remove("message");
            }
            v
        },
        |c| c["expect"].clone(),
    );
}

#[test]
fn close_codes() {
    check_all("close_codes.json", close_action, |c| c["action"].clone());
}

#[test]
fn transcripts() {
    let cases = vectors("transcripts.json");
    assert!(cases.len() >= 7);
    let start = std::time::Instant::now();
    for case in cases {
        let name = &case["name"];
        let mut runner = TranscriptRunner::new(&case, start).unwrap();
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let got = runner.step(step).unwrap();
            assert_eq!(
                got["outputs"], step["expect"],
                "{name} step {i} ({}): outputs",
                step["input"]
            );
            if let Some(t) = step.get("next_timeout_ms") {
                assert_eq!(&got["next_timeout_ms"], t, "{name} step {i}: next timeout");
            }
        }
    }
}
