//! Authentication and channel authorization.

use courier_server::auth::{Claims, Role, sign_hs256, unix_now};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::util::*;

const RSA_PRIVATE: &str = include_str!("keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa_public.pem");

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn alg_none_token(sub: &str) -> String {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64(serde_json::to_string(&claims(sub)).unwrap().as_bytes());
    format!("{header}.{claims}.")
}

fn signed(alg: Algorithm, key: &EncodingKey, c: &Claims) -> String {
    jsonwebtoken::encode(&Header::new(alg), c, key).unwrap()
}

async fn ws_refused(server: &Server, token: &str) -> (serde_json::Value, End) {
    let mut ws = server.open("/ws").await;
    ws.send(json!({"op": "connect", "token": token})).await;
    let (frames, end) = ws.until_end().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    (frames[0].clone(), end)
}

#[tokio::test]
async fn http_auth_missing_invalid_expired_none_wrong_alg() {
    let server = start().await;
    let body = event("", "global", 1);
    let r = server.post("/publish", None, &body).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "UNAUTHORIZED"
    );

    let bad_sig = sign_hs256(
        "another-secret",
        &Claims {
            role: Role::Service,
            ..claims("svc")
        },
    );
    let expired = sign_hs256(
        SECRET,
        &Claims {
            exp: unix_now() - 10,
            role: Role::Service,
            ..claims("svc")
        },
    );
    let hs384 = signed(
        Algorithm::HS384,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &Claims {
            role: Role::Service,
            ..claims("svc")
        },
    );
    for (token, code) in [
        ("garbage", "UNAUTHORIZED"),
        (bad_sig.as_str(), "UNAUTHORIZED"),
        (expired.as_str(), "TOKEN_EXPIRED"),
        (&alg_none_token("svc"), "UNAUTHORIZED"),
        (hs384.as_str(), "UNAUTHORIZED"),
    ] {
        let r = server.post("/publish", Some(token), &body).await;
        assert_eq!(r.status(), 401, "{token}");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
            code
        );
    }
    let r = server.post("/publish", Some(&service("svc")), &body).await;
    assert_eq!(r.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn ws_auth_failures_close_with_documented_codes() {
    let server = start_with(|c| c.ws.auth_timeout_ms = 300).await;
    // Invalid token: UNAUTHORIZED then 4001.
    let (f, end) = ws_refused(&server, "not-a-jwt").await;
    assert_eq!(
        (f["op"].as_str(), f["code"].as_str(), end),
        (Some("error"), Some("UNAUTHORIZED"), End::Close(4001))
    );
    // Expired: TOKEN_EXPIRED then 4002.
    let expired = sign_hs256(
        SECRET,
        &Claims {
            exp: unix_now() - 10,
            ..claims("u")
        },
    );
    let (f, end) = ws_refused(&server, &expired).await;
    assert_eq!(
        (f["code"].as_str(), end),
        (Some("TOKEN_EXPIRED"), End::Close(4002))
    );
    // alg none.
    let (f, end) = ws_refused(&server, &alg_none_token("u")).await;
    assert_eq!(
        (f["code"].as_str(), end),
        (Some("UNAUTHORIZED"), End::Close(4001))
    );
    // First frame not connect: 4000.
    let mut ws = server.open("/ws").await;
    ws.send(json!({"op": "ping"})).await;
    let (frames, end) = ws.until_end().await;
    assert_eq!(
        (frames[0]["code"].as_str(), end),
        (Some("BAD_REQUEST"), End::Close(4000))
    );
    // Nothing within the deadline: AUTH_TIMEOUT then 4004.
    let mut ws = server.open("/ws").await;
    let (frames, end) = ws.until_end().await;
    assert_eq!(
        (frames[0]["code"].as_str(), end),
        (Some("AUTH_TIMEOUT"), End::Close(4004))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn rs256_accepted_and_algorithm_confusion_rejected() {
    let server = start_with(|c| {
        c.auth.algorithms = vec!["RS256".into()];
        c.auth.rsa_public_key_pem = Some(RSA_PUBLIC.into());
    })
    .await;
    let c = Claims {
        role: Role::Service,
        ..claims("svc")
    };
    let rs = signed(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        &c,
    );
    let r = server
        .post("/publish", Some(&rs), &event("", "global", 1))
        .await;
    assert_eq!(r.status(), 200);
    // HS256 signed with the public key as the HMAC secret: the classic confusion attack.
    let confused = signed(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        &c,
    );
    assert_eq!(
        server
            .post("/publish", Some(&confused), &event("", "global", 1))
            .await
            .status(),
        401
    );
    // HS256 with the (unlisted) shared secret is refused too: the algorithm is pinned.
    assert_eq!(
        server
            .post("/publish", Some(&service("svc")), &event("", "global", 1))
            .await
            .status(),
        401
    );
    let (ws, _) = server.connect(&rs).await;
    drop(ws);
    server.shutdown().await;
}

#[tokio::test]
async fn channel_authorization() {
    let server = start().await;
    let token = user_with("alice", &["backtest.*"], &["user.alice"]);
    let (mut ws, _) = server.connect(&token).await;
    for (id, ch) in [(1, "global"), (2, "user.alice"), (3, "backtest.x")] {
        let f = ws.subscribe(id, ch, None).await;
        assert_eq!(
            (f["op"].as_str(), f["id"].as_u64()),
            (Some("subscribed"), Some(id)),
            "{f}"
        );
    }
    for (id, ch) in [(4, "user.bob"), (5, "strategy.x"), (6, "backtest.x.y")] {
        let f = ws.subscribe(id, ch, None).await;
        assert_eq!(
            (f["op"].as_str(), f["code"].as_str(), f["id"].as_u64()),
            (Some("error"), Some("FORBIDDEN_CHANNEL"), Some(id))
        );
    }
    // Still open.
    ws.send(json!({"op": "ping"})).await;
    assert_eq!(ws.recv().await["op"], "pong");
    // Users publish only where `publish` allows.
    let ok = server
        .post("/publish", Some(&token), &event("", "user.alice", 1))
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ws.recv().await["event"]["channel"], "user.alice");
    let r = server
        .post("/publish", Some(&token), &event("", "global", 1))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "FORBIDDEN_CHANNEL"
    );
    ws.send(json!({"op": "publish", "id": 9, "event": event("", "global", 1)}))
        .await;
    let f = ws.recv().await;
    assert_eq!(
        (f["code"].as_str(), f["id"].as_u64()),
        (Some("FORBIDDEN_CHANNEL"), Some(9))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn token_expiry_and_refresh_on_open_connection() {
    let server = start().await;
    let short = sign_hs256(
        SECRET,
        &Claims {
            exp: unix_now() + 1,
            ..claims("u")
        },
    );
    let (mut ws, _) = server.connect(&short).await;
    let (frames, end) = ws.until_end().await;
    assert_eq!(frames.last().unwrap()["code"], "TOKEN_EXPIRED");
    assert!(frames.last().unwrap().get("id").is_none());
    assert_eq!(end, End::Close(4002));

    // A fresh token with at least a second left (the first one has expired by now).
    let short = sign_hs256(
        SECRET,
        &Claims {
            exp: unix_now() + 2,
            ..claims("u")
        },
    );
    let (mut ws, _) = server.connect(&short).await;
    ws.send(json!({"op": "refresh", "id": 3, "token": user("u")}))
        .await;
    assert_eq!(ws.recv().await, json!({"op": "refreshed", "id": 3}));
    // A token for someone else is refused.
    ws.send(json!({"op": "refresh", "id": 4, "token": user("v")}))
        .await;
    assert_eq!(ws.recv().await["code"], "UNAUTHORIZED");
    // Past the replaced token's expiry the connection is still usable.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    ws.send(json!({"op": "ping"})).await;
    assert_eq!(ws.recv().await["op"], "pong");
    server.shutdown().await;
}

/// `{status, code, message}` of a publish with `token`.
async fn publish_with(server: &Server, token: &str) -> (u16, String, String) {
    let r = server
        .post("/publish", Some(token), &event("", "global", 1))
        .await;
    let status = r.status().as_u16();
    let body = r.json::<serde_json::Value>().await.unwrap();
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
    (status, code, message)
}

fn service_claims() -> Claims {
    Claims {
        role: Role::Service,
        ..claims("svc")
    }
}

#[tokio::test]
async fn nbf_is_enforced_with_the_leeway() {
    let server = start_with(|c| c.auth.leeway_secs = 30).await;
    let later = sign_hs256(
        SECRET,
        &Claims {
            nbf: Some(unix_now() + 3600),
            ..service_claims()
        },
    );
    let (status, code, message) = publish_with(&server, &later).await;
    assert_eq!((status, code.as_str()), (401, "UNAUTHORIZED"));
    assert!(message.contains("nbf"), "{message}");
    let (frame, _) = ws_refused(&server, &later).await;
    assert_eq!(frame["code"], "UNAUTHORIZED", "{frame}");
    // Within the leeway: accepted.
    let skewed = sign_hs256(
        SECRET,
        &Claims {
            nbf: Some(unix_now() + 10),
            ..service_claims()
        },
    );
    assert_eq!(publish_with(&server, &skewed).await.0, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let open = start().await;
    let foreign = sign_hs256(
        SECRET,
        &Claims {
            iss: Some("elsewhere".into()),
            aud: Some("another-app".into()),
            ..service_claims()
        },
    );
    // Not configured: neither is checked (an `aud` used to be refused outright).
    assert_eq!(publish_with(&open, &foreign).await.0, 200);
    open.shutdown().await;

    let strict = start_with(|c| {
        c.auth.issuer = Some("https://auth.example.com".into());
        c.auth.audience = vec!["courier".into(), "courier-staging".into()];
    })
    .await;
    let good = sign_hs256(
        SECRET,
        &Claims {
            iss: Some("https://auth.example.com".into()),
            aud: Some("courier-staging".into()),
            ..service_claims()
        },
    );
    assert_eq!(publish_with(&strict, &good).await.0, 200);
    let wrong_iss = sign_hs256(
        SECRET,
        &Claims {
            iss: Some("elsewhere".into()),
            aud: Some("courier".into()),
            ..service_claims()
        },
    );
    let (status, _, message) = publish_with(&strict, &wrong_iss).await;
    assert_eq!(status, 401);
    assert!(message.contains("iss"), "{message}");
    let wrong_aud = sign_hs256(
        SECRET,
        &Claims {
            iss: Some("https://auth.example.com".into()),
            aud: Some("another-app".into()),
            ..service_claims()
        },
    );
    let (status, _, message) = publish_with(&strict, &wrong_aud).await;
    assert_eq!(status, 401);
    assert!(message.contains("aud"), "{message}");
    let (status, _, message) = publish_with(&strict, &service("svc")).await;
    assert_eq!(status, 401, "no iss/aud at all");
    assert!(message.contains("claim"), "{message}");
    strict.shutdown().await;
}

#[tokio::test]
async fn an_unknown_tier_is_refused_while_limits_are_on() {
    let server = start().await;
    let gold = sign_hs256(
        SECRET,
        &Claims {
            tier: Some("gold".into()),
            ..service_claims()
        },
    );
    let (status, code, message) = publish_with(&server, &gold).await;
    assert_eq!((status, code.as_str()), (401, "UNAUTHORIZED"));
    assert!(
        message.contains("gold") && message.contains("premium"),
        "{message}"
    );
    server.shutdown().await;
    let off = start_with(|c| c.rate_limits.enabled = false).await;
    assert_eq!(
        publish_with(&off, &gold).await.0,
        200,
        "no tiers without limits"
    );
    off.shutdown().await;
}
