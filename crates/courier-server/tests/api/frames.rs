//! What a WebSocket client is told when the server closes on it: the close frame always
//! arrives with its code (1007, 1009, a long reason cut to fit).

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::util::*;

/// Reads text frames until the close frame: (frames, code, reason). Panics on a drop
/// without a close frame (what a client would see as 1006).
async fn until_close(ws: &mut Ws) -> (Vec<Value>, u16, String) {
    let mut frames = Vec::new();
    loop {
        let msg = tokio::time::timeout(STEP, ws.s.next())
            .await
            .expect("no close in time");
        match msg {
            Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(Some(f)))) => {
                return (frames, f.code.into(), f.reason.to_string());
            }
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("dropped without a close frame ({e}); frames {frames:?}"),
            None => panic!("dropped without a close frame; frames {frames:?}"),
        }
    }
}

#[tokio::test]
async fn a_long_close_reason_arrives_cut_to_fit_with_its_code() {
    let server = start().await;
    // A correctly signed token whose `role` claim is invalid: the message names the value.
    let claims = json!({
        "sub": "alice",
        "exp": courier_server::auth::unix_now() + 60,
        "role": "r".repeat(400),
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut ws = server.open("/ws").await;
    ws.send(json!({"op": "connect", "token": token})).await;
    let (frames, code, reason) = until_close(&mut ws).await;
    assert_eq!(code, 4001);
    let message = frames[0]["message"].as_str().unwrap();
    assert_eq!(frames[0]["code"], "UNAUTHORIZED");
    assert!(
        message.len() > 123,
        "the test needs a long message: {message}"
    );
    assert_eq!(reason.len(), 123);
    assert!(message.starts_with(&reason), "{reason:?} / {message:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = start().await;
    let bad = Message::Frame(Frame::message(
        b"{\"op\": \"ping\", \"x\": \"\xff\xfe\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    ));
    // After authentication...
    let (mut ws, _) = server.connect(&user("alice")).await;
    ws.s.send(bad.clone()).await.unwrap();
    let (frames, code, _) = until_close(&mut ws).await;
    assert_eq!(code, 1007);
    assert_eq!(frames.last().unwrap()["code"], "BAD_REQUEST");
    // ...and as the first frame.
    let mut ws = server.open("/ws").await;
    ws.s.send(bad).await.unwrap();
    let (_, code, _) = until_close(&mut ws).await;
    assert_eq!(code, 1007);
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let server = start().await;
    let (mut ws, connected) = server.connect(&user("alice")).await;
    let max = connected["limits"]["max_frame_bytes"].as_u64().unwrap() as usize;
    // Just over the limit: an error, and the connection stays.
    let over = json!({"op": "ping", "pad": "x".repeat(max)}).to_string();
    ws.s.send(Message::Text(over.into())).await.unwrap();
    assert_eq!(ws.recv().await["code"], "PAYLOAD_TOO_LARGE");
    // Far over (the WebSocket layer refuses to read it): the error, then 1009.
    let huge = json!({"op": "ping", "pad": "x".repeat(3 * max)}).to_string();
    ws.s.send(Message::Text(huge.into())).await.unwrap();
    let (frames, code, _) = until_close(&mut ws).await;
    assert_eq!(code, 1009);
    assert_eq!(frames.last().unwrap()["code"], "PAYLOAD_TOO_LARGE");
    server.shutdown().await;
}
