//! Drives the replay API (`GET /history/{channel}`) page by page, for every backend's tests.

#![allow(dead_code)]

use courier_core::{ChannelName, Event};
use serde_json::Value;

use crate::util::Server;

/// Appends `n` events to `channel` straight into the server's history (the paging tests are
/// about reading; publishing 10,000 events through the rate limits is tested elsewhere).
pub(crate) async fn fill(server: &Server, channel: &str, n: u64) {
    let ch = ChannelName::new(channel).unwrap();
    for i in 1..=n {
        let e = Event::new(
            format!("p{i}"),
            "custom.n",
            ch.clone(),
            &serde_json::json!({ "n": i }),
            Default::default(),
        );
        server.state().history.append(e).await.unwrap();
    }
}

/// `GET /history/{channel}?{query}` with `token`: status and JSON body.
pub(crate) async fn get(
    server: &Server,
    token: Option<&str>,
    channel: &str,
    query: &str,
) -> (u16, Value) {
    let r = server
        .get_as(&format!("/history/{channel}?{query}"), token)
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Pages through `channel` from `first_query`, following `next` until it is null; returns
/// every event's offset in the order received and the pages' sizes. Each page must be in
/// its direction and hold at most `limit` events.
pub(crate) async fn page_all(
    server: &Server,
    token: &str,
    channel: &str,
    first_query: &str,
    limit: usize,
) -> (Vec<u64>, Vec<usize>) {
    let mut offsets = Vec::new();
    let mut sizes = Vec::new();
    let mut query = format!("{first_query}&limit={limit}");
    loop {
        let (status, page) = get(server, Some(token), channel, &query).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["channel"], channel);
        let epoch = page["epoch"].as_str().unwrap().to_owned();
        let events = page["events"].as_array().unwrap();
        assert!(
            events.len() <= limit,
            "a page of {} > {limit}",
            events.len()
        );
        sizes.push(events.len());
        for e in events {
            assert_eq!(e["epoch"], epoch.as_str());
            assert_eq!(e["event"]["channel"], channel);
            let offset = e["offset"].as_u64().unwrap();
            // The event is the one appended at this offset.
            assert_eq!(e["event"]["data"]["n"].as_u64(), Some(offset), "{e}");
            offsets.push(offset);
        }
        match page["next"].as_str() {
            Some(c) => query = format!("cursor={c}&limit={limit}"),
            None => break,
        }
        assert!(sizes.len() <= 20_000, "paging does not end");
    }
    (offsets, sizes)
}

/// Forwards and backwards over `n` events (offsets 1..=n): each exactly once, in order.
pub(crate) async fn check_paging_both_ways(server: &Server, token: &str, channel: &str, n: u64) {
    for limit in [1000, 997] {
        let (fwd, sizes) = page_all(server, token, channel, "", limit).await;
        assert_eq!(fwd, (1..=n).collect::<Vec<_>>(), "forwards, limit {limit}");
        assert!(sizes[..sizes.len() - 1].iter().all(|s| *s == limit));
        let (back, _) = page_all(server, token, channel, "direction=backward", limit).await;
        assert_eq!(
            back,
            (1..=n).rev().collect::<Vec<_>>(),
            "backwards, limit {limit}"
        );
    }
    // From the middle, both ways, with `after` and `before`.
    let mid = n / 2;
    let (fwd, _) = page_all(server, token, channel, &format!("after={mid}"), 333).await;
    assert_eq!(fwd, (mid + 1..=n).collect::<Vec<_>>());
    let (back, _) = page_all(server, token, channel, &format!("before={mid}"), 333).await;
    assert_eq!(back, (1..mid).rev().collect::<Vec<_>>());
    // `before` = latest + 1 is "from the newest".
    let (back, _) = page_all(server, token, channel, &format!("before={}", n + 1), 1000).await;
    assert_eq!(back.len() as u64, n);
}
