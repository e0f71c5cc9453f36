//! History in one Redis stream per channel, offsets from one counter per channel, and the
//! append script that also publishes to every instance.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_core::{ChannelName, Event, StreamPosition};

use super::{LuaScript, Shared, eval_each, timed};
use crate::store::{
    DataLoss, HistoryStats, HistoryStore, Page, PageFrom, Retained, StoreError, StoredEvent,
};

/// KEYS: the channel's seq, stream and epoch. ARGV: max events, max age (ms), pub/sub
/// channel, epoch candidate, the publish command (`PUBLISH`, or `SPUBLISH` on a cluster:
/// the channel is in the keys' slot), then the events' JSON, in order. Appends them all to
/// the one channel with consecutive offsets, and publishes them in one message,
/// `"{first offset} {unix_ms} {epoch} {len},{len},… {json}{json}…"` (byte lengths; the
/// broker builds the frames, so no string is built here per event). Returns
/// `{first offset, epoch, unix_ms}`.
const APPEND: &str = r#"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
end
local n = #ARGV - 5
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lens = {}
for i = 1, n do
  local json = ARGV[5 + i]
  redis.call('XADD', KEYS[2], (first + i - 1) .. '-0', 'e', json, 'p', epoch, 't', now)
  lens[i] = #json
end
-- Trimmed by count once for the whole request: the same entries stay as when each XADD
-- trims, and the script is atomic.
redis.call('XTRIM', KEYS[2], 'MAXLEN', ARGV[1])
redis.call(ARGV[5], ARGV[3], first .. ' ' .. now .. ' ' .. epoch .. ' ' .. table.concat(lens, ',') .. ' ' .. table.concat(ARGV, '', 6))
local max_age = tonumber(ARGV[2])
local cutoff = now - max_age
for i = 1, 32 do
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #oldest == 0 then break end
  local f = oldest[1][2]
  local ft = 0
  for j = 1, #f, 2 do
    if f[j] == 't' then ft = tonumber(f[j + 1]) end
  end
  if ft >= cutoff then break end
  redis.call('XDEL', KEYS[2], oldest[1][1])
end
redis.call('PEXPIRE', KEYS[2], max_age)
return {first, epoch, now}
"#;

/// One pub/sub message of the append script: a channel's consecutive events.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Appended<'a> {
    pub(crate) first: u64,
    pub(crate) unix_ms: u64,
    pub(crate) epoch: &'a str,
    /// Each event's JSON, at offsets `first`, `first + 1`, …
    pub(crate) events: Vec<&'a str>,
}

/// Reads a message of the append script; `None` when it is not one.
pub(crate) fn parse_appended(payload: &str) -> Option<Appended<'_>> {
    let mut parts = payload.splitn(5, ' ');
    let first = parts.next()?.parse().ok()?;
    let unix_ms = parts.next()?.parse().ok()?;
    let epoch = parts.next()?;
    let lens = parts.next()?;
    let mut rest = parts.next()?;
    let mut events = Vec::new();
    for len in lens.split(',') {
        let len: usize = len.parse().ok()?;
        let (json, tail) = (rest.get(..len)?, rest.get(len..)?);
        events.push(json);
        rest = tail;
    }
    rest.is_empty().then_some(Appended {
        first,
        unix_ms,
        epoch,
        events,
    })
}

/// The `event` frame for an entry.
pub(crate) fn event_frame(epoch: &str, offset: u64, event_json: &str) -> String {
    format!(r#"{{"op":"event","epoch":"{epoch}","offset":{offset},"event":{event_json}}}"#)
}

/// The event's JSON inside a frame [`event_frame`] wrote (the broker beside PostgreSQL
/// publishes events in the append script's format from the frames `http` encoded).
pub(crate) fn event_json_in_frame(frame: &str) -> Option<&str> {
    let rest = frame.strip_prefix(r#"{"op":"event","epoch":""#)?;
    let (_, rest) = rest.split_once(r#"","offset":"#)?;
    let (offset, rest) = rest.split_once(r#","event":"#)?;
    offset.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
    rest.strip_suffix('}')
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
            .arg(shared.channel_key("h", channel))
            .arg(format!("{}-0", after + 1))
            .arg(end)
            .query_async(&mut c),
    )
    .await?;
    Ok(parse_entries(raw))
}

/// Up to `count` entries from `start` (an `XRANGE` bound such as `5-0` or `(5-0`) towards
/// the end of the stream, or backwards (`XREVRANGE`) towards its start.
async fn read_count(
    shared: &Shared,
    channel: &ChannelName,
    start: &str,
    backward: bool,
    count: usize,
) -> Result<Vec<Entry>, StoreError> {
    let mut c = shared.conn();
    let (cmd, end) = if backward {
        ("XREVRANGE", "-")
    } else {
        ("XRANGE", "+")
    };
    let raw: Vec<RawEntry> = timed(
        shared,
        redis::cmd(cmd)
            .arg(shared.channel_key("h", channel))
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(count)
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

impl RedisHistory {
    /// The smallest offset whose entry was stored at or after `unix_ms` (one past the
    /// stream's end when none was): store times ascend with offsets, so a bisection over
    /// the held offsets finds it in O(log n) one-entry reads.
    async fn first_since(&self, channel: &ChannelName, unix_ms: u64) -> Result<u64, StoreError> {
        let s = &self.shared;
        let first = read_count(s, channel, "-", false, 1).await?;
        let last = read_count(s, channel, "+", true, 1).await?;
        let (Some(first), Some(last)) = (first.first(), last.first()) else {
            return Ok(1);
        };
        if first.unix_ms >= unix_ms {
            return Ok(first.offset);
        }
        if last.unix_ms < unix_ms {
            return Ok(last.offset + 1);
        }
        // Invariant: the entry at `lo` is older than `unix_ms`; the first entry at or after
        // `hi` is not.
        let (mut lo, mut hi) = (first.offset, last.offset);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            // The first entry at or after `mid` (one may have been deleted).
            match read_count(s, channel, &format!("{mid}-0"), false, 1)
                .await?
                .first()
            {
                // Nothing held in mid..e.offset: starting at `mid` reads `e` first.
                Some(e) if e.unix_ms >= unix_ms => hi = mid,
                Some(e) => lo = e.offset.max(mid),
                None => hi = mid,
            }
        }
        Ok(hi)
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
            .unwrap_or_else(|| Err(StoreError("redis: the append got no answer".into())))
    }

    async fn append_many(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Result<StoredEvent, StoreError>>, StoreError> {
        let s = &self.shared;
        let max_age_ms = u64::try_from(self.max_age.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let epoch_candidate = super::new_epoch();
        // One script call per channel with that channel's events in order, pipelined:
        // offsets are consecutive per channel in the order of `events`.
        let mut groups: Vec<(&ChannelName, Vec<usize>)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match groups.iter_mut().find(|(ch, _)| **ch == e.channel) {
                Some((_, members)) => members.push(i),
                None => groups.push((&e.channel, vec![i])),
            }
        }
        let calls = groups
            .iter()
            .map(|(ch, members)| {
                let mut call = self.append.call(&[
                    s.channel_key("seq", ch),
                    s.channel_key("h", ch),
                    s.channel_key("ep", ch),
                ]);
                call.arg(self.max_events)
                    .arg(max_age_ms)
                    .arg(s.channel_key("ev", ch))
                    .arg(&epoch_candidate)
                    .arg(if s.is_cluster() {
                        "SPUBLISH"
                    } else {
                        "PUBLISH"
                    });
                for &i in members {
                    // The core's writer: `data` is copied as it is, not parsed again.
                    call.arg(events[i].to_json());
                }
                call
            })
            .collect();
        // A channel whose call failed fails its events alone; the others are stored.
        let answers: Vec<Result<(u64, String, u64), StoreError>> =
            eval_each(s, &self.append, calls).await?;
        let mut positions: Vec<Result<(u64, Arc<str>), StoreError>> = (0..events.len())
            .map(|_| Err(StoreError("redis: the append got no answer".into())))
            .collect();
        for ((channel, members), answer) in groups.iter().zip(answers) {
            match answer {
                Ok((first, epoch, _now)) => {
                    let epoch = s.saw_epoch(channel, &epoch);
                    for (k, &i) in members.iter().enumerate() {
                        positions[i] = Ok((first + k as u64, epoch.clone()));
                    }
                }
                Err(e) => {
                    for &i in members {
                        positions[i] = Err(e.clone());
                    }
                }
            }
        }
        Ok(events
            .into_iter()
            .zip(positions)
            .map(|(event, position)| {
                position.map(|(offset, epoch)| StoredEvent {
                    epoch,
                    offset,
                    event: Arc::new(event),
                })
            })
            .collect())
    }

    async fn latest(&self, channel: &ChannelName) -> Result<(Arc<str>, u64), StoreError> {
        self.shared.channel_head(channel).await
    }

    async fn read_since(
        &self,
        channel: &ChannelName,
        since: &StreamPosition,
    ) -> Result<Retained, StoreError> {
        // The epoch first: it decides where the client's unseen events start.
        let (epoch, mut latest) = self.latest(channel).await?;
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

    async fn read_page(
        &self,
        channel: &ChannelName,
        from: PageFrom,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        let (epoch, mut latest) = self.latest(channel).await?;
        // Entries past the age limit may still be in the stream (trimmed lazily): they are
        // the oldest, so skipping them ends a backward page and only delays a forward one.
        let cutoff = crate::http::unix_ms()
            .saturating_sub(u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX));
        let live = |e: &Entry| e.unix_ms >= cutoff && *e.epoch == *epoch;
        let (backward, mut start) = match from {
            PageFrom::After(after) => (false, format!("({after}-0")),
            PageFrom::Before(before) if before > latest => (true, "+".to_owned()),
            PageFrom::Before(before) => (true, format!("({before}-0")),
            PageFrom::Since(ms) => (false, format!("{}-0", self.first_since(channel, ms).await?)),
        };
        // One more than the page, to tell whether more follow.
        let mut held = Vec::with_capacity(limit + 1);
        loop {
            let want = limit + 1 - held.len();
            let entries = read_count(&self.shared, channel, &start, backward, want).await?;
            let fetched = entries.len();
            let Some(last) = entries.last().map(|e| e.offset) else {
                break;
            };
            let mut stale = false;
            for e in entries {
                if live(&e) {
                    held.push(e);
                } else {
                    stale = true;
                }
            }
            // Backwards, a stale entry is the oldest end; forwards, all were read, or the
            // page is full.
            if (backward && stale) || fetched < want || held.len() > limit {
                break;
            }
            start = format!("({last}-0");
        }
        let more = held.len() > limit;
        held.truncate(limit);
        let mut events = Vec::with_capacity(held.len());
        for e in held {
            let event: Event = serde_json::from_str(&e.event_json)
                .map_err(|err| StoreError(format!("a stored event is unreadable: {err}")))?;
            latest = latest.max(e.offset);
            events.push(StoredEvent {
                epoch: epoch.clone(),
                offset: e.offset,
                event: Arc::new(event),
            });
        }
        Ok(Page {
            epoch,
            latest,
            events,
            more,
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
        s.ping().await
    }

    fn data_loss(&self) -> DataLoss {
        self.shared.data_loss()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_messages_split_by_byte_length() {
        let m = parse_appended("7 1700 e1 10,12 {\"a\":\"é\"}{\"b\":\" 1,2\"}").unwrap();
        assert_eq!(
            m,
            Appended {
                first: 7,
                unix_ms: 1700,
                epoch: "e1",
                events: vec!["{\"a\":\"é\"}", "{\"b\":\" 1,2\"}"],
            }
        );
        // A length past the end, or in the middle of a character, or bytes left over.
        assert_eq!(parse_appended("7 1700 e1 99 {}"), None);
        assert_eq!(parse_appended("7 1700 e1 7 {\"a\":\"é\"}"), None);
        assert_eq!(parse_appended("7 1700 e1 1 {}"), None);
        assert_eq!(parse_appended("x 1700 e1 2 {}"), None);
    }

    #[test]
    fn the_event_json_is_read_back_from_the_frame_http_encodes() {
        use courier_core::{Delivery, ServerFrame};
        let event = Event::from_json_data(
            "t1",
            "trade.executed",
            ChannelName::new("trades").unwrap(),
            r#"{"s":"}\"event\":{"}"#.into(),
            courier_core::Metadata::default(),
        )
        .unwrap();
        let frame = ServerFrame::Event(Delivery {
            epoch: "e7".into(),
            offset: 42,
            event: event.clone(),
        })
        .encode();
        let json = event_json_in_frame(&frame).unwrap();
        assert_eq!(json, event.to_json());
        assert_eq!(event_frame("e7", 42, json), frame);
        assert_eq!(event_json_in_frame(r#"{"op":"ack","id":"x"}"#), None);
    }
}
