//! The idempotency window: one atomic set-if-absent-and-get with expiry per event id, all
//! of a request's ids in one pipeline.

use std::sync::Arc;
use std::time::Duration;

use super::{Shared, timed};
use crate::store::{Claim, IdempotencyStore, PublishRecord, StoreError};
use async_trait::async_trait;

/// How long a claim stays `pending` if its publisher dies before finishing.
const PENDING_TTL_MS: u64 = 10_000;

/// Event ids in Redis for the window.
pub struct RedisIdempotency {
    shared: Arc<Shared>,
    window: Duration,
}

impl RedisIdempotency {
    /// Ids over `shared`, remembered for `window`.
    pub fn new(shared: Arc<Shared>, window: Duration) -> Self {
        Self { shared, window }
    }

    fn key(&self, key: &str) -> String {
        self.shared.key(&format!("idem:{key}"))
    }
}

fn encode(r: &PublishRecord) -> String {
    format!("done\n{}\n{}\n{}", r.channel, r.epoch, r.offset)
}

fn decode(v: &str) -> Option<PublishRecord> {
    let mut parts = v.split('\n');
    if parts.next()? != "done" {
        return None;
    }
    Some(PublishRecord {
        channel: parts.next()?.to_owned(),
        epoch: parts.next()?.to_owned(),
        offset: parts.next()?.parse().ok()?,
    })
}

#[async_trait]
impl IdempotencyStore for RedisIdempotency {
    async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        let mut claims = self.claim_many(&[key.to_owned()]).await?;
        claims
            .pop()
            .ok_or_else(|| StoreError("redis: the claim got no answer".into()))
    }

    async fn claim_many(&self, keys: &[String]) -> Result<Vec<Claim>, StoreError> {
        // `SET NX GET` (Redis >= 7.0) claims and reads in one command: nil when claimed.
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("SET")
                .arg(self.key(k))
                .arg("pending")
                .arg("NX")
                .arg("PX")
                .arg(PENDING_TTL_MS)
                .arg("GET");
        }
        let mut c = self.shared.conn();
        let answers: Vec<Option<String>> = timed(&self.shared, pipe.query_async(&mut c)).await?;
        let answers: Vec<String> = answers.into_iter().map(Option::unwrap_or_default).collect();
        Ok(answers
            .iter()
            .map(|v| {
                if v.is_empty() {
                    Claim::New
                } else if let Some(r) = decode(v) {
                    Claim::Done(r)
                } else {
                    Claim::Pending
                }
            })
            .collect())
    }

    async fn complete(&self, key: &str, record: PublishRecord) -> Result<(), StoreError> {
        self.complete_many(vec![(key.to_owned(), record)]).await
    }

    async fn complete_many(&self, done: Vec<(String, PublishRecord)>) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let ms = u64::try_from(self.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut pipe = redis::pipe();
        for (key, record) in &done {
            pipe.cmd("SET")
                .arg(self.key(key))
                .arg(encode(record))
                .arg("PX")
                .arg(ms)
                .ignore();
        }
        let mut c = self.shared.conn();
        let _: () = timed(&self.shared, pipe.query_async(&mut c)).await?;
        Ok(())
    }

    async fn release_many(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let mut c = self.shared.conn();
        let mut del = redis::cmd("DEL");
        for k in keys {
            del.arg(self.key(k));
        }
        let _: Result<(), _> = timed(&self.shared, del.query_async(&mut c)).await;
    }

    async fn release(&self, key: &str) {
        let mut c = self.shared.conn();
        let _: Result<(), _> = timed(
            &self.shared,
            redis::cmd("DEL").arg(self.key(key)).query_async(&mut c),
        )
        .await;
    }

    fn entries(&self) -> usize {
        // Kept in Redis with an expiry each; counting them would scan Redis.
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = PublishRecord {
            channel: "a.b".into(),
            epoch: "e1".into(),
            offset: 7,
        };
        assert_eq!(decode(&encode(&r)), Some(r));
        assert_eq!(decode("pending"), None);
    }
}
