//! Runs every file in `tests/vectors/` through `courier_core::conformance::evaluate`, the same
//! entry point the TypeScript and Python bindings expose, and compares each case with the
//! core's answer.

use courier_core::ErrorCategory;
use courier_core::conformance::{VECTOR_FILES, error_codes, evaluate};
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

/// `errors.json` lists every code the core reports, once, each with a class of its tree, and
/// every category has a class of its own (the classes are named in the file, once).
#[test]
fn errors_json_lists_every_code_and_a_class_per_category() {
    let path = format!(
        "{}/../../tests/vectors/errors.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let listed: Vec<&str> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        error_codes(),
        "errors.json lists every code once, in order"
    );

    let classes = doc["classes"].as_array().unwrap();
    let class = |name: &str| classes.iter().find(|c| c["name"] == name);
    for c in classes {
        let parent = c["parent"].as_str();
        assert!(
            parent.is_none_or(|p| class(p).is_some()),
            "{}: unknown parent",
            c["name"]
        );
    }
    for case in doc["cases"].as_array().unwrap() {
        for lang in ["python", "typescript"] {
            let name = case[lang].as_str().unwrap();
            let c = class(name).unwrap_or_else(|| panic!("{}: no class {name}", case["code"]));
            assert_eq!(c["category"], case["category"], "{}: {name}", case["code"]);
        }
    }
    for category in ErrorCategory::ALL {
        let roots: Vec<_> = classes
            .iter()
            .filter(|c| {
                c["category"] == category.as_str()
                    && c["parent"]
                        .as_str()
                        .is_none_or(|p| class(p).unwrap()["category"] != category.as_str())
            })
            .collect();
        assert_eq!(roots.len(), 1, "one class stands for `{category}`");
    }
}

#[test]
fn a_wrong_error_category_is_caught() {
    let origin = std::time::Instant::now();
    let mut case = cases("errors").remove(0);
    assert_eq!(evaluate("errors", &case, origin).unwrap(), case);
    case["category"] = Value::from("server");
    assert_ne!(evaluate("errors", &case, origin).unwrap(), case);
    case["code"] = Value::from("NOT_A_CODE");
    assert!(evaluate("errors", &case, origin).is_err());
}
