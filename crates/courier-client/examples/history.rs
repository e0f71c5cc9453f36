//! Courier history: publish one event, then read the channel's history, newest first.

use std::sync::Arc;

use courier_client::{Client, ClientConfig, HistoryQuery, HistoryStart, StaticToken};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("COURIER_URL").unwrap_or_else(|_| "http://127.0.0.1:8766".into());
    let token = std::env::var("COURIER_TOKEN").expect("set COURIER_TOKEN to a token");
    let client = Client::new(ClientConfig::new(url), Arc::new(StaticToken(token)))?;

    let channel = "backtest.hist";
    let data = json!({"backtest_id": "hist", "percent": 42.5});
    client.publish(channel, "backtest.progress", &data).await?;
    // Newest first, 100 a page; After, Before, Since or a page's Cursor choose where to start.
    let query = HistoryQuery {
        start: HistoryStart::Newest,
        limit: 100,
    };
    let mut history = client.history(channel, query)?;
    if let Some(delivery) = history.next_event().await {
        let d = delivery?;
        println!(
            "received {} {} at offset {}",
            d.event.event_type, d.event.data, d.offset
        );
    }
    client.close().await;
    Ok(())
}
