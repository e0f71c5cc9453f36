//! The reader against serde_json as an oracle: the same texts are JSON (or not), and
//! strings decode to the same text. Inputs are drawn from a JSON-shaped alphabet so that
//! most of them come close to valid JSON and the interesting edges (escapes, surrogates,
//! numbers, nesting, control characters, the eight-byte string scan) are hit often.

use courier_json::{Reader, validate};
use proptest::prelude::*;
use serde::de::IgnoredAny;

fn json_shaped() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "{", "}", "[", "]", ",", ":", "\"", "\"", "\"k\"", "\\", "\\\"", "\\n", "\\u00e9",
        "\\uD83D", "\\uDE00", "\\u12", "\\x", " ", "\n", "0", "1", "-", ".", "e", "E", "+", "12",
        "007", "true", "false", "null", "nul", "abcdefgh", "é", "😀", "\u{1}", "\u{1f}", "\t",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn accepts_exactly_what_serde_json_accepts(text in json_shaped()) {
        let ours = validate(&text).is_ok();
        let oracle = serde_json::from_str::<IgnoredAny>(&text).is_ok();
        prop_assert_eq!(ours, oracle, "text: {:?}", text);
    }

    #[test]
    fn strings_decode_like_serde_json(text in json_shaped()) {
        let quoted = format!("\"{text}\"");
        let mut r = Reader::new(&quoted);
        let ours = r.string().map(|s| s.into_owned()).and_then(|s| r.end().map(|()| s));
        let oracle = serde_json::from_str::<String>(&quoted);
        match (ours, oracle) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "{:?}: ours {:?}, serde_json {:?}", quoted, a, b.map_err(|e| e.to_string())),
        }
    }

    #[test]
    fn objects_walk_like_serde_json(text in json_shaped()) {
        // `open_object` / `next_key`, the closure-free object walk of the event hot path.
        let text = format!("{{{text}");
        let walk = |text: &str| -> Result<Vec<String>, courier_json::JsonError> {
            let mut r = Reader::new(text);
            r.open_object()?;
            let mut first = true;
            let mut keys = Vec::new();
            while let Some(key) = r.next_key(&mut first)? {
                keys.push(key.into_owned());
                r.skip_value()?;
            }
            r.end()?;
            Ok(keys)
        };
        let ours = walk(&text).map(|mut k| { k.sort(); k.dedup(); k });
        let oracle = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
            .map(|m| m.keys().cloned().collect::<Vec<_>>());
        match (ours, oracle) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "{:?}: ours {:?}, serde_json {:?}", text, a, b.map_err(|e| e.to_string())),
        }
        // The closure form reads the same keys.
        let mut closure_keys = Vec::new();
        let closure = Reader::new(&text).object(|r, key| {
            closure_keys.push(key.to_owned());
            r.skip_value().map(drop)
        });
        if let Ok(keys) = walk(&text) {
            prop_assert!(closure.is_ok());
            prop_assert_eq!(keys, closure_keys);
        }
    }

    #[test]
    fn any_string_round_trips(s in any::<String>()) {
        let text = serde_json::to_string(&s).unwrap();
        let back = Reader::new(&text).string().unwrap();
        prop_assert_eq!(back.as_ref(), s.as_str());
        prop_assert!(validate(&text).is_ok());
    }
}

proptest! {
    #[test]
    fn u64_reads_like_serde_json(text in prop::sample::select(vec![
        "0", "7", "10", "007", "-1", "1.5", "1e3", "1E3", "18446744073709551615",
        "18446744073709551616", "9999999999999999999", "99999999999999999999", "12 ", " 12", "1x",
    ]).prop_map(str::to_owned), digits in "[1-9][0-9]{0,21}") {
        for t in [text.as_str(), digits.as_str()] {
            let mut r = Reader::new(t);
            let ours = r.u64().and_then(|n| r.end().map(|()| n)).ok();
            let oracle = serde_json::from_str::<u64>(t).ok()
                .filter(|_| !t.contains(['.', 'e', 'E']));
            prop_assert_eq!(ours, oracle, "{:?}", t);
        }
    }
}
