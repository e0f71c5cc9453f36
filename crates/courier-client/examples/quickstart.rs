//! Courier quickstart: subscribe, publish one event, print it when it arrives, exit.

use std::sync::Arc;

use courier_client::{Client, ClientConfig, StaticToken};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("COURIER_URL").unwrap_or_else(|_| "http://127.0.0.1:8766".into());
    let token = std::env::var("COURIER_TOKEN").expect("set COURIER_TOKEN to a token");
    let client = Client::new(ClientConfig::new(url), Arc::new(StaticToken(token)))?;

    let channel = "backtest.abc";
    let mut sub = client.subscribe(channel, None)?;
    sub.ready().await?; // confirmed by the server: what is published from now on arrives
    let data = json!({"backtest_id": "abc", "percent": 42.5});
    client.publish(channel, "backtest.progress", &data).await?;
    if let Some(delivery) = sub.next_event().await {
        let event = delivery?.event;
        println!("received {} {}", event.event_type, event.data);
    }
    client.close().await;
    Ok(())
}
