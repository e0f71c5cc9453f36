//! The three publish endpoints' answers to odd bodies: status, code and field, against
//! `bodies.expected` (one block per body; regenerate it with `BODIES_OUT=<file>` and read
//! the diff). Recorded when the server moved from serde_json (five passes over a batch) to
//! the core's one-pass reader: the answers that changed are the deliberate ones, see
//! `docs/protocol.md` ("Reading publish bodies").

use serde_json::Value;

use crate::util::*;

const VALID: &str = r#"{"type":"custom.x","channel":"global","data":{"a":1}}"#;

/// Bodies of one event, each sent to `/publish`, `/publish/global` and, inside
/// `{"events":[…]}`, to `/publish/batch`.
fn event_bodies() -> Vec<String> {
    let deep = format!(
        r#"{{"type":"custom.x","channel":"global","data":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let mut v: Vec<String> = [
        VALID,
        r#"{"type":"custom.x","data":{}}"#,
        r#"{"channel":"global","data":{}}"#,
        r#"{"type":"custom.x","channel":"global"}"#,
        r#"{"data":{}}"#,
        r#"{"type":5,"channel":"global","data":{}}"#,
        r#"{"type":null,"channel":"global","data":{}}"#,
        r#"{"id":7,"type":"custom.x","channel":"global","data":{}}"#,
        r#"{"id":null,"type":"custom.x","channel":"global","data":{}}"#,
        r#"{"id":"a b","type":"custom.x","channel":"global","data":{}}"#,
        r#"{"type":"custom.x","channel":"a..b","data":{}}"#,
        r#"{"type":"custom.x","channel":5,"data":{}}"#,
        r#"{"type":"custom.x","channel":null,"data":{}}"#,
        r#"{"type":"custom.x","channel":"other","data":{}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":5}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":null}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"timestamp":"x"}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"timestamp":-1}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"timestamp":1.5}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"source":5}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"correlation_id":null,"user_id":"u"}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"user_id":5}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"source":"a","source":"b"}}"#,
        r#"{"type":"custom.x","type":"custom.y","channel":"global","data":{}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"data":{}}"#,
        r#"[]"#,
        r#""x""#,
        r#"5"#,
        r#"null"#,
        r#"{"#,
        r#""#,
        r#"{"type":"custom.x","channel":"global","data":{"a":}}"#,
        r#"{"type":"custom.x" "channel":"global","data":{}}"#,
        r#"{"type":"custom.x","channel":"global","data":{}} x"#,
        r#"{"type":"custom.x","channel":"global","data":{}}{}"#,
        r#"{"type":"custom.x","channel":"global","data":{"n":1e999,"s":"\ud800","b":123456789012345678901234567890}}"#,
        r#"{"type":"custom.\ud800","channel":"global","data":{}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"zz":[1,]}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"zz":{"a":[1,{"b":null}]}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"zz":[}}"#,
        r#"{"type":5,"channel":"global","data":{"#,
        r#"{"type":"Bad Type","channel":"global","data":{}}"#,
        r#"{"type":"backtest.progress","channel":"global","data":{"percent":1}}"#,
        "{\"type\":\"custom.x\",\"channel\":\"global\",\"data\":\"a\u{1}\"}",
        r#"{"type":"custom.x","channel":"global","data":{},}"#,
        r#"{"type":"custom.x","channel":"global","data":01}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"source":"a" "x":1}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"source":"a",}}"#,
        r#"{"type":"custom.x","channel":"global","data":"\u00zz"}"#,
        r#"{"type":"custom.x","channel":"global","data":{}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"id":"x","id":"y"}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{},"metadata":{}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"timestamp":1,"timestamp":2}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"timestamp":99999999999999999999}}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"metadata":{"correlation_id":7}}"#,
        r#"{"type":"custom.x","data":{},"channel":"global","channel":"global"}"#,
        r#"{"type":"custom.x","channel":"global","data":{},"type":5}"#,
        r#"{"type":"custom.x","channel":"glo\u0062al","data":{}}"#,
        r#"{"type":"custom.x","channel":"global","data":{}, "id": "\u00e9"}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(deep);
    v
}

/// Bodies of `/publish/batch` as a whole.
const BATCH_BODIES: &[&str] = &[
    r#"{"nope":1}"#,
    r#"{"events":5}"#,
    r#"{"events":null}"#,
    r#"{"events":[]}"#,
    r#"[]"#,
    r#""#,
    r#"{"events":[]} x"#,
    r#"{"events":[],"events":[]}"#,
    r#"{"events":[1,"x",null,[]]}"#,
    r#"{"events":[{"type":"custom.x","channel":"global","data":{}},{"type":5,"id":"i2","channel":"c..d"},{"#,
    r#"{"extra":{"a":[1,2]},"events":[{"type":"custom.x","channel":"global","data":{}}]}"#,
];

/// `status code field` of an answer; for a 200 batch answer, one `status code field id
/// channel` per result.
async fn outcome(r: reqwest::Response) -> String {
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    if let Some(results) = v["results"].as_array() {
        let items: Vec<String> = results
            .iter()
            .map(|r| {
                format!(
                    "{}:{}:{}:{}:{}",
                    s(&r["status"]),
                    s(&r["error"]["code"]),
                    s(&r["error"]["field"]),
                    s(&r["id"]),
                    if r["status"] == "rejected" {
                        s(&r["channel"])
                    } else {
                        "*".into()
                    },
                )
            })
            .collect();
        return format!("{status} [{}]", items.join(" "));
    }
    format!(
        "{status} {} {}",
        s(&v["error"]["code"]),
        s(&v["error"]["field"])
    )
}

#[tokio::test]
async fn odd_bodies_get_the_same_answers() {
    let server = start_with(|c| c.rate_limits.enabled = false).await;
    let svc = service("svc");
    let post = |path: &str, body: Vec<u8>| {
        server
            .http
            .post(server.url(path))
            .bearer_auth(&svc)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let mut lines = Vec::new();
    let mut bodies: Vec<Vec<u8>> = event_bodies().into_iter().map(String::into_bytes).collect();
    bodies.push(b"{\"type\":\"custom.x\",\"channel\":\"global\",\"data\":\"\xff\"}".to_vec());
    for body in &bodies {
        let one = outcome(post("/publish", body.clone()).await.unwrap()).await;
        let path = outcome(post("/publish/global", body.clone()).await.unwrap()).await;
        let mut batch = b"{\"events\":[".to_vec();
        batch.extend_from_slice(body);
        batch.extend_from_slice(b"]}");
        let batch = outcome(post("/publish/batch", batch).await.unwrap()).await;
        lines.push(format!(
            "{}\n  /publish: {one}\n  /publish/global: {path}\n  batch: {batch}",
            String::from_utf8_lossy(body)
        ));
    }
    for body in BATCH_BODIES {
        let batch = outcome(
            post("/publish/batch", body.as_bytes().to_vec())
                .await
                .unwrap(),
        )
        .await;
        lines.push(format!("{body}\n  batch: {batch}"));
    }
    // Generated ids vary from run to run.
    let got: String = lines
        .join("\n")
        .split(':')
        .map(|part| if is_ulid(part) { "ID" } else { part })
        .collect::<Vec<_>>()
        .join(":");
    if let Ok(out) = std::env::var("BODIES_OUT") {
        std::fs::write(out, &got).unwrap();
    }
    server.shutdown().await;
    let want = include_str!("bodies.expected");
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {}", i + 1);
    }
    assert_eq!(got.lines().count(), want.lines().count());
}

fn is_ulid(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}
