//! Runs every file in `tests/vectors/` through `courier_core::conformance::evaluate`, the same
//! entry point the TypeScript and Python bindings expose, and compares each case with the
//! core's answer.

use courier_core::conformance::{VECTOR_FILES, evaluate};
use serde_json::Value;

fn cases(file: &str) -> Vec<Value> {
    let path = format!(
        "{}/../../tests/vectors/{file}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        doc["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{path}: no description"
    );
    doc["cases"].as_array().expect("cases").clone()
}

/// The first differing path between two JSON values, for readable failures.
fn diff(path: &str, want: &Value, got: &Value) -> Option<String> {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => a.keys().chain(b.keys()).find_map(|k| {
            diff(
                &format!("{path}.{k}"),
                a.get(k).unwrap_or(&Value::Null),
                b.get(k).unwrap_or(&Value::Null),
            )
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| diff(&format!("{path}[{i}]"), x, y)),
        _ if want == got => None,
        _ => Some(format!("{path}: expected {want}, got {got}")),
    }
}

#[test]
fn every_vector_file_is_known_and_passes() {
    let dir = format!("{}/../../tests/vectors", env!("CARGO_MANIFEST_DIR"));
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk, VECTOR_FILES,
        "a vector file has no runner, or a runner no file"
    );
    let origin = std::time::Instant::now();
    let mut failures = vec![];
    let mut count = 0;
    for file in VECTOR_FILES {
        for case in cases(file) {
            count += 1;
            let got = evaluate(file, &case, origin)
                .unwrap_or_else(|e| panic!("{file} {}: {e}", case["name"]));
            if let Some(d) = diff("", &case, &got) {
                failures.push(format!("{file} / {}: {d}", case["name"]));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count > 150, "only {count} cases");
}

#[test]
fn a_wrong_expectation_is_caught() {
    let mut case = cases("retry_after").remove(0);
    let origin = std::time::Instant::now();
    case["delay_ms"] = Value::from(123_456_789u64);
    assert_ne!(evaluate("retry_after", &case, origin).unwrap(), case);
    let mut t = cases("transcripts").remove(0);
    t["steps"][1]["expect"] = Value::Array(vec![]);
    assert_ne!(evaluate("transcripts", &t, origin).unwrap(), t);
    // A queue case: a hold one millisecond short, a batch with one event less.
    let q = cases("queue").remove(0);
    assert_eq!(evaluate("queue", &q, origin).unwrap(), q);
    let held = q["steps"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["next_timeout_ms"] == 12_020)
        .expect("a step waiting for the deposit bucket");
    let mut early = q.clone();
    early["steps"][held]["next_timeout_ms"] = Value::from(12_019u64);
    assert_ne!(evaluate("queue", &early, origin).unwrap(), early);
    let sending = q["steps"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["sent"].as_array().is_some_and(|b| !b.is_empty()))
        .unwrap();
    let mut fewer = q.clone();
    fewer["steps"][sending]["sent"][0]["events"]
        .as_array_mut()
        .unwrap()
        .pop();
    assert_ne!(evaluate("queue", &fewer, origin).unwrap(), fewer);
}
