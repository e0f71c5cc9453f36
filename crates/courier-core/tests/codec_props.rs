//! Decoding arbitrary input never panics, and whatever decodes re-encodes to itself.

use courier_core::frame::{ClientFrame, ServerFrame};
use courier_core::{Event, conformance};
use proptest::prelude::*;

const MAX: usize = 1 << 20;

fn json_like() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z._ ]{0,12}".prop_map(|s| format!("\"{s}\"")),
        prop::sample::select(vec![
            "\"event\"",
            "\"subscribe\"",
            "\"connect\"",
            "\"error\"",
            "\"ack\""
        ])
        .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop::sample::select(vec![
            "op", "id", "channel", "event", "epoch", "offset", "since", "data", "type", "token",
            "code",
        ]);
        prop::collection::vec((keys, inner), 0..6).prop_map(|kv| {
            let body: Vec<String> = kv
                .into_iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = ClientFrame::decode(&text, MAX);
        let _ = ServerFrame::decode(&text, MAX);
        let _ = serde_json::from_str::<Event>(&text).map(|e| e.validate(100));
    }

    #[test]
    fn json_shaped_input_never_panics_and_round_trips(text in json_like()) {
        if let Ok(frame) = ClientFrame::decode(&text, MAX) {
            prop_assert_eq!(ClientFrame::decode(&frame.encode(), MAX).unwrap(), frame);
        }
        if let Ok(frame) = ServerFrame::decode(&text, MAX) {
            prop_assert_eq!(ServerFrame::decode(&frame.encode(), MAX).unwrap(), frame);
        }
        let _ = conformance::validate_event(&serde_json::json!({ "event": text }));
    }
}

mod hostile_server {
    use std::time::Instant;

    use courier_core::ChannelName;
    use courier_core::connection::{Connection, ConnectionConfig};
    use proptest::prelude::*;

    proptest! {
        /// Whatever a server sends (huge intervals, offsets at u64::MAX, junk), the
        /// connection never panics and keeps answering poll_timeout.
        #[test]
        fn connection_survives_any_frames(
            ping in any::<u64>(),
            offsets in prop::collection::vec(any::<u64>(), 0..8),
            retry in any::<u64>(),
        ) {
            let now = Instant::now();
            let mut c = Connection::new(ConnectionConfig { connect_timeout_ms: u64::MAX, ..Default::default() }, 1);
            c.subscribe(ChannelName::new("a").unwrap(), None, now).unwrap();
            c.connect(now);
            c.handle_token(Ok("t".into()), now);
            c.handle_transport_open(now);
            c.handle_text(&format!(r#"{{"op":"connected","session":"s","epoch":"e","ping_interval_ms":{ping}}}"#), now);
            c.handle_text(&format!(r#"{{"op":"error","id":1,"code":"RATE_LIMIT_EXCEEDED","message":"m","retry_after_ms":{retry}}}"#), now);
            c.handle_timeout(now);
            c.handle_text(r#"{"op":"subscribed","id":1,"channel":"a","recovered":true,"epoch":"e","offset":18446744073709551615}"#, now);
            for o in offsets {
                c.handle_text(&format!(r#"{{"op":"event","epoch":"e","offset":{o},"event":{{"id":"x","type":"t","channel":"a","data":1}}}}"#), now);
            }
            c.handle_text(&format!(r#"{{"op":"error","code":"RATE_LIMIT_EXCEEDED","message":"m","retry_after_ms":{retry}}}"#), now);
            c.handle_transport_closed(Some(4029), "", now);
            let _ = c.poll_timeout();
            while c.poll().is_some() {}
        }
    }
}
