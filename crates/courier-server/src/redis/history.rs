//! History in one Redis stream per channel, offsets from one counter per channel, and the
//! append script that also publishes to every instance.

use std::sync::Arc;
use std::time::Duration;

use super::{LuaScript, Shared, eval_many, timed};
use crate::store::{HistoryStats, HistoryStore, Retained, StoreError, StoredEvent};
use async_trait::async_trait;
use courier_core::{ChannelName, Event, StreamPosition};

/// KEYS: seq, stream, epoch. ARGV: event JSON, max events, max age (ms), pub/sub channel,
/// epoch candidate. Returns `{offset, epoch, unix_ms}`.
const APPEND: &str = r#"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[3], epoch)
end
local off = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], off .. '-0', 'e', ARGV[1], 'p', epoch, 't', now)
local max_age = tonumber(ARGV[3])
local cutoff = now - max_age
for i = 1, 32 do
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #first == 0 then break end
  local f = first[1][2]
  local ft = 0
  for j = 1, #f, 2 do
    if f[j] == 't' then ft = tonumber(f[j + 1]) end
  end
  if ft >= cutoff then break end
  redis.call('XDEL', KEYS[2], first[1][1])
end
redis.call('PEXPIRE', KEYS[2], max_age)
local frame = '{"op":"event","epoch":"' .. epoch .. '","offset":' .. off .. ',"event":' .. ARGV[1] .. '}'
redis.call('PUBLISH', ARGV[4], off .. ' ' .. now .. ' ' .. epoch .. ' ' .. frame)
return {off, epoch, now}
"#;

/// The `event` frame for an entry, byte for byte what the append script publishes.
pub(crate) fn event_frame(epoch: &str, offset: u64, event_json: &str) -> String {
    format!(r#"{{"op":"event","epoch":"{epoch}","offset":{offset},"event":{event_json}}}"#)
}

/// One stream entry.
pub(crate) struct Entry {
    pub(crate) offset: u64,
    pub(crate) epoch: String,
    pub(crate) unix_ms: u64,
    pub(crate) event_json: String,
}

type RawEntry = (String, Vec<String>);

pub(crate) fn parse_entries(raw: Vec<RawEntry>) -> Vec<Entry> {
    raw.into_iter()
        .filter_map(|(id, fields)| {
            let offset = id.split('-').next()?.parse().ok()?;
            let mut entry = Entry {
                offset,
                epoch: String::new(),
                unix_ms: 0,
                event_json: String::new(),
            };
            for kv in fields.chunks_exact(2) {
                match kv[0].as_str() {
                    "e" => entry.event_json = kv[1].clone(),
                    "p" => entry.epoch = kv[1].clone(),
                    "t" => entry.unix_ms = kv[1].parse().unwrap_or(0),
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
}

/// Reads the entries after `after` (up to `until`, inclusive, when given).
pub(crate) async fn read_range(
    shared: &Shared,
    channel: &ChannelName,
    after: u64,
    until: Option<u64>,
) -> Result<Vec<Entry>, StoreError> {
    let mut c = shared.conn();
    let end = until.map_or_else(|| "+".to_owned(), |u| format!("{u}-0"));
    let raw: Vec<RawEntry> = timed(
        shared,
        redis::cmd("XRANGE")
            .arg(shared.key(&format!("h:{channel}")))
            .arg(format!("{}-0", after + 1))
            .arg(end)
            .query_async(&mut c),
    )
    .await?;
    Ok(parse_entries(raw))
}

/// History in Redis streams.
pub struct RedisHistory {
    shared: Arc<Shared>,
    max_events: usize,
    max_age: Duration,
    append: LuaScript,
}

impl RedisHistory {
    /// History over `shared`, trimmed to `max_events` per channel and `max_age`.
    pub fn new(shared: Arc<Shared>, max_events: usize, max_age: Duration) -> Self {
        Self {
            shared,
            max_events: max_events.max(1),
            max_age,
            append: LuaScript::new(APPEND),
        }
    }
}

#[async_trait]
impl HistoryStore for RedisHistory {
    fn epoch(&self) -> Arc<str> {
        self.shared.epoch()
    }

    async fn append(&self, event: Event) -> Result<StoredEvent, StoreError> {
        self.append_many(vec![event])
            .await?
            .pop()
            .ok_or_else(|| StoreError("redis: the append got no answer".into()))
    }

    async fn append_many(&self, events: Vec<Event>) -> Result<Vec<StoredEvent>, StoreError> {
        let s = &self.shared;
        let max_age_ms = u64::try_from(self.max_age.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let epoch_candidate = super::new_epoch();
        // One script call per event, pipelined: Redis runs them in order, so a channel's
        // offsets follow the order of `events`.
        let calls = events
            .iter()
            .map(|event| {
                let ch = &event.channel;
                let mut call = self.append.call(&[
                    s.key(&format!("seq:{ch}")),
                    s.key(&format!("h:{ch}")),
                    s.key("epoch"),
                ]);
                // The core's writer: `data` is copied as it is, not parsed again.
                call.arg(event.to_json())
                    .arg(self.max_events)
                    .arg(max_age_ms)
                    .arg(s.key(&format!("ev:{ch}")))
                    .arg(&epoch_candidate);
                call
            })
            .collect();
        let answers: Vec<(u64, String, u64)> = eval_many(s, &self.append, calls).await?;
        if answers.len() != events.len() {
            return Err(StoreError("redis: the append script answered oddly".into()));
        }
        Ok(events
            .into_iter()
            .zip(answers)
            .map(|(event, (offset, epoch, _now))| {
                s.set_epoch(&epoch);
                StoredEvent {
                    epoch: epoch.into(),
                    offset,
                    event: Arc::new(event),
                }
            })
            .collect())
    }

    async fn latest(&self, channel: &ChannelName) -> Result<u64, StoreError> {
        let s = &self.shared;
        let mut c = s.conn();
        let (latest, epoch): (Option<u64>, Option<String>) = timed(
            s,
            redis::cmd("MGET")
                .arg(s.key(&format!("seq:{channel}")))
                .arg(s.key("epoch"))
                .query_async(&mut c),
        )
        .await?;
        match epoch {
            Some(e) => s.set_epoch(&e),
            None => {
                s.ensure_epoch().await?;
            }
        }
        Ok(latest.unwrap_or(0))
    }

    async fn read_since(
        &self,
        channel: &ChannelName,
        since: &StreamPosition,
    ) -> Result<Retained, StoreError> {
        // The epoch first: it decides where the client's unseen events start.
        let mut latest = self.latest(channel).await?;
        let epoch = self.shared.epoch();
        let after = if *since.epoch == *epoch {
            since.offset
        } else {
            0
        };
        if latest <= after {
            return Ok(Retained {
                epoch,
                latest,
                events: Vec::new(),
            });
        }
        // The stream is trimmed by count on append (exact MAXLEN) and by age lazily (a few
        // entries per append, or the whole key when idle), so entries older than the age
        // limit may still be there: skip them as the trim would have.
        let entries = read_range(&self.shared, channel, after, None).await?;
        let cutoff = crate::http::unix_ms()
            .saturating_sub(u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX));
        let mut events = Vec::with_capacity(entries.len());
        for e in entries {
            if e.unix_ms < cutoff || *e.epoch != *epoch {
                continue;
            }
            let event: Event = serde_json::from_str(&e.event_json)
                .map_err(|err| StoreError(format!("a stored event is unreadable: {err}")))?;
            events.push(StoredEvent {
                epoch: epoch.clone(),
                offset: e.offset,
                event: Arc::new(event),
            });
        }
        // Appends between the two reads: the replay includes them, so the latest does too.
        if let Some(last) = events.last() {
            latest = latest.max(last.offset);
        }
        Ok(Retained {
            epoch,
            latest,
            events,
        })
    }

    async fn stats(&self) -> HistoryStats {
        // Counting every stream would scan Redis; /health and /stats report this instance's
        // view only (its subscribed channels live in the broker's count).
        HistoryStats::default()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let s = &self.shared;
        if !s.fanout_up() {
            return Err(StoreError("redis: fan-out connection is down".into()));
        }
        let mut c = s.conn();
        let _: String = timed(s, redis::cmd("PING").query_async(&mut c)).await?;
        Ok(())
    }
}
