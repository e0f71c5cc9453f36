use super::*;
use crate::error::ErrorCode;

fn item(text: &str, default_channel: Option<&str>) -> EventItem {
    let channel = default_channel.map(|c| ChannelName::new(c).unwrap());
    let mut r = Reader::new(text);
    EventItem::read_json(&mut r, channel.as_ref())
}

fn fault(text: &str) -> (FaultKind, Option<String>) {
    let f = item(text, None).into_event().expect_err(text);
    (f.kind, f.field)
}

fn rejected() -> BatchItemResult {
    let mut e = ErrorBody::new(ErrorCode::RateLimitExceeded, "slow \"down\"");
    e.field = Some("events[1].type".into());
    e.retry_after_ms = Some(250);
    e.limit_type = Some("user".into());
    BatchItemResult::rejected("b", Some("global".into()), e)
}

#[test]
fn writers_write_what_serde_writes_and_readers_read_it_back() {
    let results = BatchResponseBody {
        results: vec![
            BatchItemResult::accepted("a", "global", "E", 7),
            BatchItemResult::duplicate("c\u{e9}", "global", "E", 3),
            rejected(),
            BatchItemResult::rejected("d", None, ErrorBody::new(ErrorCode::Internal, "x")),
        ],
    };
    let text = results.to_json();
    assert_eq!(text, serde_json::to_string(&results).unwrap());
    assert_eq!(BatchResponseBody::from_json(&text).unwrap(), results);

    let response = PublishResponse {
        id: "e1".into(),
        channel: "global".into(),
        epoch: "E".into(),
        offset: 9,
        duplicate: true,
    };
    let text = response.to_json();
    assert_eq!(text, serde_json::to_string(&response).unwrap());
    assert_eq!(
        PublishResponse::read_json(&mut Reader::new(&text)).unwrap(),
        response
    );

    let event = Event::from_json_data(
        "e1",
        "custom.x",
        ChannelName::new("global").unwrap(),
        r#"{"n": 1e999}"#.into(),
        Metadata::default(),
    )
    .unwrap();
    let request = BatchRequest {
        events: vec![event.clone(), event],
    };
    let text = request.to_json();
    assert_eq!(text, serde_json::to_string(&request).unwrap());
    assert_eq!(
        BatchRequest::read_json(&mut Reader::new(&text)).unwrap(),
        request
    );
    let empty = BatchRequest { events: vec![] }.to_json();
    assert_eq!(empty.len(), BATCH_BODY_OVERHEAD);
}

#[test]
fn field_lists_are_the_members_serde_writes() {
    let keys = |v: serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let sorted = |f: &[&str]| -> Vec<String> {
        let mut k: Vec<String> = f.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    };
    let mut full = rejected();
    full.epoch = Some("E".into());
    full.offset = Some(1);
    assert_eq!(
        keys(serde_json::to_value(&full).unwrap()),
        sorted(BatchItemResult::FIELDS)
    );
    let r = PublishResponse {
        id: "a".into(),
        channel: "c".into(),
        epoch: "E".into(),
        offset: 1,
        duplicate: false,
    };
    assert_eq!(
        keys(serde_json::to_value(&r).unwrap()),
        sorted(PublishResponse::FIELDS)
    );
    let b = BatchResponseBody { results: vec![] };
    assert_eq!(
        keys(serde_json::to_value(&b).unwrap()),
        sorted(BatchResponseBody::FIELDS)
    );
    let q = BatchRequest { events: vec![] };
    assert_eq!(
        keys(serde_json::to_value(&q).unwrap()),
        sorted(BatchRequest::FIELDS)
    );
}

#[test]
fn an_event_item_keeps_data_verbatim_and_takes_the_path_channel() {
    let data = r#"{"b": 1, "a": 123456789012345678901234567890, "f": 1e999, "s": "\ud800"}"#;
    let text = format!(r#"{{"type":"custom.x","data":{data},"metadata":{{"source":"s"}}}}"#);
    let it = item(&text, Some("global"));
    assert_eq!(it.fault(), None);
    assert!(!it.has_channel);
    let e = it.into_event().unwrap();
    assert_eq!(
        (
            e.data.get(),
            e.channel.as_str(),
            e.metadata.source.as_str(),
            e.id.as_str()
        ),
        (data, "global", "s", "")
    );
    // Without a path channel, `channel` is required.
    assert_eq!(fault(&text), (FaultKind::Missing, Some("channel".into())));
}

#[test]
fn an_event_item_names_its_first_fault() {
    let cases: &[(&str, FaultKind, Option<&str>)] = &[
        (
            r#"{"channel":"global","data":{}}"#,
            FaultKind::Missing,
            Some("type"),
        ),
        (r#"{"data":{}}"#, FaultKind::Missing, Some("type")),
        (
            r#"{"type":"x","channel":"global"}"#,
            FaultKind::Missing,
            Some("data"),
        ),
        (
            r#"{"type":5,"channel":"a..b","data":{}}"#,
            FaultKind::Invalid,
            Some("type"),
        ),
        (
            r#"{"id":null,"type":"x","channel":"g","data":{}}"#,
            FaultKind::Invalid,
            Some("id"),
        ),
        (
            r#"{"type":"x","channel":"a..b","data":{}}"#,
            FaultKind::Invalid,
            Some("channel"),
        ),
        (
            r#"{"type":"x","channel":"g","data":{},"metadata":{"source":5}}"#,
            FaultKind::Invalid,
            Some("metadata.source"),
        ),
        (
            r#"{"type":"x","channel":"g","data":{},"metadata":[]}"#,
            FaultKind::Invalid,
            Some("metadata"),
        ),
        (
            r#"{"type":"x","type":"y","channel":"g","data":{}}"#,
            FaultKind::Invalid,
            None,
        ),
        (r#"[1]"#, FaultKind::NotAnObject, None),
        (
            r#"{"type":"x","channel":"g","data":{"a":}}"#,
            FaultKind::Syntax,
            Some("data"),
        ),
        (
            r#"{"type":"x" "channel":"g"}"#,
            FaultKind::Syntax,
            Some("?"),
        ),
        (
            r#"{"type":"x","channel":"g","data":{},"metadata":{"zz":[}}"#,
            FaultKind::Syntax,
            Some("metadata.zz"),
        ),
        // The first fault in text order wins, even over a later syntax error.
        (
            r#"{"type":5,"channel":"g","data":{"#,
            FaultKind::Invalid,
            Some("type"),
        ),
    ];
    for (text, kind, field) in cases {
        assert_eq!(fault(text), (*kind, field.map(str::to_owned)), "{text}");
    }
    let it = item(r#"{"type":5,"id":"i","channel":"c..d","data":{}}"#, None);
    assert_eq!(
        (
            it.id.as_deref(),
            it.event_type.as_deref(),
            it.channel.as_deref()
        ),
        (Some("i"), None, Some("c..d"))
    );
    assert!(it.syntax.is_none());
}

#[test]
fn a_batch_body_is_refused_whole_only_when_it_is_not_a_batch() {
    let items = BatchRequest::read_items(
        r#"{"x":[1],"events":[{"type":"custom.x","channel":"global","data":{}},7,{"type":5}]}"#,
    )
    .unwrap();
    assert_eq!(items.len(), 3);
    assert!(items[0].fault().is_none());
    assert_eq!(items[1].fault().unwrap().kind, FaultKind::NotAnObject);
    assert_eq!(items[2].fault().unwrap().field.as_deref(), Some("type"));
    for bad in [
        r#"{"nope":1}"#,
        r#"{"events":5}"#,
        r#"{"events":[]} x"#,
        r#"{"events":[],"events":[]}"#,
        r#"{"events":[{"type":5,"data":{"#,
        "",
    ] {
        assert!(BatchRequest::read_items(bad).is_err(), "{bad}");
    }
}
