//! The replay API on the memory backend: paging over 10,000 events both ways, `since`,
//! authorization, the 400s naming their parameter, a stale cursor's 409, and events that
//! are exactly what a subscription delivers.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::paging::{check_paging_both_ways, fill, get, page_all};
use crate::util::*;

/// A history large enough for the test (the default holds 1,000 per channel).
async fn server_holding(n: usize) -> Server {
    start_with(|c| c.history.max_events_per_channel = n).await
}

#[tokio::test]
async fn paging_10000_events_forwards_and_backwards_returns_each_once() {
    let server = server_holding(20_000).await;
    fill(&server, "hist.big", 10_000).await;
    let token = user_with("reader", &["hist.*"], &[]);
    check_paging_both_ways(&server, &token, "hist.big", 10_000).await;
    server.shutdown().await;
}

#[tokio::test]
async fn trimmed_history_pages_from_the_oldest_held_and_latest_stays() {
    let server = server_holding(50).await;
    fill(&server, "hist.trim", 120).await;
    let token = user_with("reader", &["hist.*"], &[]);
    let (fwd, _) = page_all(&server, &token, "hist.trim", "", 7).await;
    assert_eq!(fwd, (71..=120).collect::<Vec<_>>());
    let (back, _) = page_all(&server, &token, "hist.trim", "direction=backward", 7).await;
    assert_eq!(back, (71..=120).rev().collect::<Vec<_>>());
    let (status, page) = get(&server, Some(&token), "hist.trim", "after=10&limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(page["latest"], 120);
    assert_eq!(page["events"][0]["offset"], 71);
    // An empty channel: no events, latest 0, no next.
    let (status, page) = get(&server, Some(&token), "hist.none", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            page["latest"].clone(),
            page["events"].clone(),
            page["next"].clone()
        ),
        (json!(0), json!([]), Value::Null)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn since_starts_at_the_first_event_stored_at_or_after_it() {
    let server = start().await;
    let token = user_with("reader", &["hist.*"], &[]);
    fill(&server, "hist.since", 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let cut = courier_server::http::unix_ms();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    // Offsets 4 and 5 are stored after `cut`.
    for i in 4..=5 {
        let ch = courier_core::ChannelName::new("hist.since").unwrap();
        let e = courier_core::Event::new(
            format!("p{i}"),
            "custom.n",
            ch,
            &json!({"n": i}),
            Default::default(),
        );
        server.state().history.append(e).await.unwrap();
    }
    let (fwd, _) = page_all(&server, &token, "hist.since", &format!("since={cut}"), 1).await;
    assert_eq!(fwd, vec![4, 5]);
    // The same instant in RFC 3339.
    let rfc = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(cut) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (fwd, _) = page_all(&server, &token, "hist.since", &format!("since={rfc}"), 10).await;
    assert_eq!(fwd, vec![4, 5]);
    let (fwd, _) = page_all(
        &server,
        &token,
        "hist.since",
        "since=1970-01-01T00:00:00Z",
        10,
    )
    .await;
    assert_eq!(fwd, vec![1, 2, 3, 4, 5]);
    let (status, page) = get(
        &server,
        Some(&token),
        "hist.since",
        &format!("since={}", cut + 3_600_000),
    )
    .await;
    assert_eq!(
        (status, page["events"].clone(), page["next"].clone()),
        (200, json!([]), Value::Null)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn authorization_is_that_of_subscribe() {
    let server = start().await;
    fill(&server, "hist.a", 2).await;
    // Not granted: 403 FORBIDDEN_CHANNEL, as a subscribe would be refused.
    let (status, body) = get(
        &server,
        Some(&user_with("u", &["other.*"], &[])),
        "hist.a",
        "",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("FORBIDDEN_CHANNEL")),
        "{body}"
    );
    // A user reads its own channel and `global`; a service reads everything.
    let (status, _) = get(&server, Some(&user("u")), "user.u", "").await;
    assert_eq!(status, 200);
    let (status, _) = get(&server, Some(&user("u")), "user.v", "").await;
    assert_eq!(status, 403);
    let (status, _) = get(&server, Some(&user("u")), "global", "").await;
    assert_eq!(status, 200);
    let (status, body) = get(&server, Some(&service("svc")), "hist.a", "").await;
    assert_eq!(
        (status, body["events"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    // No token or a bad one: 401.
    let (status, body) = get(&server, None, "hist.a", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    let (status, _) = get(&server, Some("not-a-jwt"), "hist.a", "").await;
    assert_eq!(status, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let server = start().await;
    let token = user_with("u", &["hist.*"], &[]);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after=-3", "after"),
        ("after=x", "after"),
        ("before=0", "before"),
        ("since=last%20week", "since"),
        ("since=2026-13-01T00:00:00Z", "since"),
        ("cursor=bm9wZQ", "cursor"),
        ("cursor=%%%", "cursor"),
        ("after=1&before=5", "before"),
        ("since=5&cursor=abc", "cursor"),
        ("after=1&direction=backward", "direction"),
        ("before=9&direction=forward", "direction"),
        ("direction=sideways", "direction"),
        ("offset=4", "offset"),
        ("limit=5&limit=6", "limit"),
    ] {
        let (status, body) = get(&server, Some(&token), "hist.a", query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "BAD_REQUEST", "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, body) = get(&server, Some(&token), "bad..name", "").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("channel")),
        "{body}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_cursor_of_another_epoch_is_409_epoch_changed() {
    let server = start().await;
    let token = user_with("u", &["hist.*"], &[]);
    fill(&server, "hist.e", 5).await;
    let (_, page) = get(&server, Some(&token), "hist.e", "limit=2").await;
    let next = page["next"].as_str().unwrap().to_owned();
    let (status, _) = get(&server, Some(&token), "hist.e", &format!("cursor={next}")).await;
    assert_eq!(status, 200);
    // The same position in an epoch this server never had (its history was lost).
    let decoded = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&next)
            .unwrap(),
    )
    .unwrap();
    let epoch = page["epoch"].as_str().unwrap();
    assert!(decoded.contains(epoch), "{decoded}");
    let stale =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(decoded.replace(epoch, "0ld3p0ch"));
    let (status, body) = get(&server, Some(&token), "hist.e", &format!("cursor={stale}")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "EPOCH_CHANGED");
    assert_eq!(body["error"]["field"], "cursor");
    server.shutdown().await;
}

#[tokio::test]
async fn events_are_exactly_what_a_subscription_delivers() {
    let server = start().await;
    let svc = service("svc");
    let (mut ws, _) = server.connect(&svc).await;
    let f = ws.subscribe(1, "hist.live", None).await;
    assert_eq!(f["op"], "subscribed");
    let body = json!({"id": "ev-1", "type": "backtest.progress", "channel": "hist.live",
        "data": {"backtest_id": "b", "percent": 12.5, "note": "é\"\\"},
        "metadata": {"correlation_id": "c-1"}});
    let r = server.post("/publish", Some(&svc), &body).await;
    assert_eq!(r.status(), 200);
    let frame = ws.recv_text().await;
    let (status, page) = get(&server, Some(&svc), "hist.live", "").await;
    assert_eq!(status, 200);
    let live: Value = serde_json::from_str(&frame).unwrap();
    let entry = &page["events"][0];
    assert_eq!(entry["epoch"], live["epoch"]);
    assert_eq!(entry["offset"], live["offset"]);
    assert_eq!(entry["event"], live["event"]);
    server.shutdown().await;
}
