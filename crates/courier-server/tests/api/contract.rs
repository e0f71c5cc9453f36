//! The history contract every store keeps, over the `HistoryStore` trait: run on memory and
//! PostgreSQL (tests/postgres.rs) and on Redis (tests/redis.rs).
#![allow(dead_code)]

use courier_core::{ChannelName, Event, StreamPosition};
use courier_server::store::{HistoryStore, PageFrom};
use serde_json::json;

pub(crate) async fn append(h: &dyn HistoryStore, ch: &ChannelName, n: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for i in 0..n {
        let e = Event::new(
            format!("e{i}"),
            "x",
            ch.clone(),
            &json!({}),
            Default::default(),
        );
        out.push(h.append(e).await.unwrap().offset);
    }
    out
}

pub(crate) fn at(epoch: &str, offset: u64) -> StreamPosition {
    StreamPosition {
        epoch: epoch.into(),
        offset,
    }
}

/// (offsets held for `since`, replay_from, recovered)
pub(crate) async fn resume(
    h: &dyn HistoryStore,
    ch: &ChannelName,
    since: StreamPosition,
) -> (Vec<u64>, u64, bool) {
    let r = h.read_since(ch, &since).await.unwrap();
    let p = r.resume_point(&since);
    (
        r.events.iter().map(|e| e.offset).collect(),
        p.replay_from,
        p.recovered,
    )
}

/// The history contract every store keeps (the memory store's unit tests, here over the
/// trait): offsets from 1, dense, per channel; the resume rule over a history trimmed to 3
/// events; pages both ways.
pub(crate) async fn holds(h: &dyn HistoryStore) {
    let ch = ChannelName::new("a").unwrap();
    let other = ChannelName::new("b").unwrap();
    // The channel's epoch (on Redis each channel has its own), stable across its appends.
    let (e, latest) = h.latest(&ch).await.unwrap();
    let e = e.to_string();
    assert_eq!(latest, 0);
    assert_eq!(resume(h, &ch, at(&e, 0)).await, (vec![], 1, true));
    assert_eq!(resume(h, &ch, at("old", 7)).await, (vec![], 1, false));
    assert_eq!(append(h, &ch, 5).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(append(h, &other, 2).await, vec![1, 2]);
    assert_eq!(h.latest(&ch).await.unwrap(), (e.as_str().into(), 5));
    // Holds 3..=5.
    assert_eq!(resume(h, &ch, at(&e, 2)).await, (vec![3, 4, 5], 3, true));
    assert_eq!(resume(h, &ch, at(&e, 4)).await, (vec![5], 5, true));
    assert_eq!(resume(h, &ch, at(&e, 5)).await, (vec![], 6, true));
    assert_eq!(resume(h, &ch, at(&e, 9)).await, (vec![], 6, true));
    assert_eq!(resume(h, &ch, at(&e, 0)).await, (vec![3, 4, 5], 3, false));
    assert_eq!(resume(h, &ch, at(&e, 1)).await, (vec![3, 4, 5], 3, false));
    assert_eq!(
        resume(h, &ch, at("old", 4)).await,
        (vec![3, 4, 5], 3, false)
    );
    assert_eq!(
        resume(h, &ch, at("old", 99)).await,
        (vec![3, 4, 5], 3, false)
    );
    // Pages.
    let offsets =
        |p: courier_server::store::Page| p.events.iter().map(|e| e.offset).collect::<Vec<_>>();
    let p = h.read_page(&ch, PageFrom::After(0), 2).await.unwrap();
    assert_eq!((p.latest, p.more), (5, true));
    assert_eq!(offsets(p), vec![3, 4]);
    let p = h.read_page(&ch, PageFrom::After(4), 2).await.unwrap();
    assert!(!p.more);
    assert_eq!(offsets(p), vec![5]);
    let p = h
        .read_page(&ch, PageFrom::Before(u64::MAX), 2)
        .await
        .unwrap();
    assert!(p.more);
    assert_eq!(offsets(p), vec![5, 4]);
    let p = h.read_page(&ch, PageFrom::Before(4), 5).await.unwrap();
    assert!(!p.more);
    assert_eq!(offsets(p), vec![3]);
    let p = h.read_page(&ch, PageFrom::Since(0), 5).await.unwrap();
    assert_eq!(offsets(p), vec![3, 4, 5]);
    let p = h.read_page(&other, PageFrom::After(0), 5).await.unwrap();
    assert_eq!(offsets(p), vec![1, 2]);
}
