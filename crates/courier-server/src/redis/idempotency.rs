//! The idempotency window: one atomic set-if-absent with expiry per event id.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{Shared, timed};
use crate::store::{Claim, IdempotencyStore, PublishRecord, StoreError};

/// How long a claim stays `pending` if its publisher dies before finishing.
const PENDING_TTL_MS: u64 = 10_000;

/// KEYS: the id's key. ARGV: pending TTL (ms). Returns "" when claimed, else the value.
const CLAIM: &str = r#"
if redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[1]) then
  return ''
end
return redis.call('GET', KEYS[1]) or ''
"#;

/// Event ids in Redis for the window.
pub struct RedisIdempotency {
    shared: Arc<Shared>,
    window: Duration,
    claim: Script,
}

impl RedisIdempotency {
    /// Ids over `shared`, remembered for `window`.
    pub fn new(shared: Arc<Shared>, window: Duration) -> Self {
        Self {
            shared,
            window,
            claim: Script::new(CLAIM),
        }
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
        let mut invocation = self.claim.prepare_invoke();
        invocation.key(self.key(key)).arg(PENDING_TTL_MS);
        let mut c = self.shared.conn();
        let v: String = timed(&self.shared, invocation.invoke_async(&mut c)).await?;
        Ok(if v.is_empty() {
            Claim::New
        } else if let Some(r) = decode(&v) {
            Claim::Done(r)
        } else {
            Claim::Pending
        })
    }

    async fn complete(&self, key: &str, record: PublishRecord) -> Result<(), StoreError> {
        let ms = u64::try_from(self.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut c = self.shared.conn();
        let _: () = timed(
            &self.shared,
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(encode(&record))
                .arg("PX")
                .arg(ms)
                .query_async(&mut c),
        )
        .await?;
        Ok(())
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
