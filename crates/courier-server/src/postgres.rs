//! History in PostgreSQL (`history.backend = "postgres"`): durable, retained for days,
//! shared by every instance on the same database, with the memory or the Redis fan-out.
//!
//! Driver: tokio-postgres with a deadpool pool. The store needs a handful of fixed
//! statements and no ORM or compile-time query checks, so the lean driver (no macros, no
//! database at build time, far fewer crates to compile than sqlx) is enough; deadpool is the
//! pool its authors' ecosystem uses.
//!
//! Schema: `migrations/*.sql` in this crate, embedded and applied at start in order, each
//! once (`courier_migrations`), under an advisory lock so instances starting together do
//! not race. Offsets come from `courier_channels.latest`, incremented by the append's
//! upsert, which holds the channel row's lock until the append commits: appends from any
//! number of instances get dense offsets. The epoch is a row of `courier_meta`, created
//! with the history, so it survives restarts. Retention (age and count) is a background
//! task; reads also skip what it has not deleted yet, so a page never shows an event past
//! the limits.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_core::{ChannelName, Event, StreamPosition};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use crate::config::PostgresConfig;
use crate::store::{HistoryStats, HistoryStore, Page, PageFrom, Retained, StoreError, StoredEvent};

/// The migrations, in order: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../migrations/0001_history.sql"))];

/// Events a resume replays at most (the newest of them); older ones stay readable through
/// the replay API. Keeps a resume from a week-old position from loading a week of events.
const MAX_RESUME_EVENTS: i64 = 10_000;

/// The database's clock in Unix ms: one clock for every instance.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

fn db_error(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("postgres: {e}"))
}

/// The PostgreSQL history store.
pub struct PostgresHistory {
    pool: Pool,
    epoch: Arc<str>,
    config: PostgresConfig,
}

/// The URL without its password, for logs and errors.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl PostgresHistory {
    /// Connects (retrying until `startup_timeout_ms`), applies the migrations, reads or
    /// creates the epoch, and starts the retention task, which ends with `stop`.
    pub async fn connect(
        config: &PostgresConfig,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(|e| {
            StoreError(format!(
                "history.postgres.url `{}` is not a PostgreSQL URL: {e}",
                redacted(&config.url)
            ))
        })?;
        pg.connect_timeout(Duration::from_millis(config.statement_timeout_ms.max(1)));
        pg.application_name("courier-server");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(Duration::from_millis(config.statement_timeout_ms.max(1)));
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(db_error)?;
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(config.startup_timeout_ms);
        loop {
            match pool.get().await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, url = %redacted(&config.url), "waiting for PostgreSQL");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(StoreError(format!(
                        "cannot reach PostgreSQL at {}: {e}",
                        redacted(&config.url)
                    )));
                }
            }
        }
        migrate(&pool).await?;
        let epoch = {
            let c = pool.get().await.map_err(db_error)?;
            let candidate = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            c.execute(
                "INSERT INTO courier_meta (key, value) VALUES ('epoch', $1) ON CONFLICT DO NOTHING",
                &[&candidate],
            )
            .await
            .map_err(db_error)?;
            let row = c
                .query_one("SELECT value FROM courier_meta WHERE key = 'epoch'", &[])
                .await
                .map_err(db_error)?;
            row.get::<_, String>(0)
        };
        tracing::info!(epoch = %epoch, "PostgreSQL history ready");
        let store = Arc::new(Self {
            pool,
            epoch: epoch.into(),
            config: config.clone(),
        });
        tokio::spawn(retention(store.clone(), stop));
        Ok(store)
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(db_error)
    }

    /// Runs `f` within the statement timeout.
    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let timeout = Duration::from_millis(self.config.statement_timeout_ms.max(1));
        match tokio::time::timeout(timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError("postgres: statement timed out".into())),
        }
    }

    /// The oldest store time still retained (Unix ms), by the database's clock as seen
    /// from here.
    fn cutoff_ms(&self) -> i64 {
        let age = i64::try_from(self.config.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        i64::try_from(crate::http::unix_ms())
            .unwrap_or(i64::MAX)
            .saturating_sub(age)
    }

    /// Offsets at or below this are past the count limit, given the latest.
    fn count_floor(&self, latest: i64) -> i64 {
        let max = i64::try_from(self.config.max_events_per_channel.max(1)).unwrap_or(i64::MAX);
        latest.saturating_sub(max).max(0)
    }

    async fn latest_of(
        &self,
        c: &deadpool_postgres::Object,
        channel: &ChannelName,
    ) -> Result<i64, StoreError> {
        let row = c
            .query_opt(
                "SELECT latest FROM courier_channels WHERE channel = $1",
                &[&channel.as_str()],
            )
            .await
            .map_err(db_error)?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    fn stored(&self, offset: i64, json: &str) -> Result<StoredEvent, StoreError> {
        let event: Event = serde_json::from_str(json)
            .map_err(|e| StoreError(format!("a stored event is unreadable: {e}")))?;
        Ok(StoredEvent {
            epoch: self.epoch.clone(),
            offset: u64::try_from(offset).unwrap_or(0),
            event: Arc::new(event),
        })
    }

    /// Deletes what the limits no longer retain: events older than `max_age_secs`, and per
    /// channel those more than `max_events_per_channel` behind its latest. Returns how
    /// many were deleted.
    pub async fn enforce_retention(&self) -> Result<u64, StoreError> {
        self.timed(async {
            let c = self.conn().await?;
            let by_age = c
                .execute(
                    "DELETE FROM courier_events WHERE stored_at < $1",
                    &[&self.cutoff_ms()],
                )
                .await
                .map_err(db_error)?;
            let max = i64::try_from(self.config.max_events_per_channel.max(1)).unwrap_or(i64::MAX);
            let by_count = c
                .execute(
                    "DELETE FROM courier_events e USING courier_channels ch \
                     WHERE e.channel = ch.channel AND e.\"offset\" <= ch.latest - $1",
                    &[&max],
                )
                .await
                .map_err(db_error)?;
            Ok(by_age + by_count)
        })
        .await
    }
}

/// Applies the migrations not applied yet, in one transaction under an advisory lock.
async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut c = pool.get().await.map_err(db_error)?;
    let tx = c.transaction().await.map_err(db_error)?;
    // One instance at a time; the lock ends with the transaction.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('courier_migrations'))",
        &[],
    )
    .await
    .map_err(db_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS courier_migrations (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(db_error)?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM courier_migrations", &[])
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError(format!("postgres: migration {version} failed: {e}")))?;
        tx.execute(
            "INSERT INTO courier_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(db_error)?;
        tracing::info!(version, "applied a PostgreSQL migration");
    }
    tx.commit().await.map_err(db_error)
}

/// Enforces retention every `retention_interval_ms` until `stop`.
async fn retention(store: Arc<PostgresHistory>, stop: CancellationToken) {
    let every = Duration::from_millis(store.config.retention_interval_ms.max(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match store.enforce_retention().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "history retention"),
            Err(e) => tracing::warn!(error = %e, "history retention failed; retrying later"),
        }
    }
}

#[async_trait]
impl HistoryStore for PostgresHistory {
    fn epoch(&self) -> Arc<str> {
        self.epoch.clone()
    }

    async fn append(&self, event: Event) -> Result<StoredEvent, StoreError> {
        let json = event.to_json();
        let offset: i64 = self
            .timed(async {
                let c = self.conn().await?;
                let sql = format!(
                    "WITH ch AS (
                        INSERT INTO courier_channels AS c (channel, latest) VALUES ($1, 1)
                        ON CONFLICT (channel) DO UPDATE SET latest = c.latest + 1
                        RETURNING latest
                    )
                    INSERT INTO courier_events (channel, \"offset\", stored_at, event)
                    SELECT $1, latest, {NOW_MS}, $2 FROM ch
                    RETURNING \"offset\""
                );
                let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
                let row = c
                    .query_one(&stmt, &[&event.channel.as_str(), &json])
                    .await
                    .map_err(db_error)?;
                Ok(row.get(0))
            })
            .await?;
        Ok(StoredEvent {
            epoch: self.epoch.clone(),
            offset: u64::try_from(offset).unwrap_or(0),
            event: Arc::new(event),
        })
    }

    async fn latest(&self, channel: &ChannelName) -> Result<(Arc<str>, u64), StoreError> {
        self.timed(async {
            let c = self.conn().await?;
            let latest = u64::try_from(self.latest_of(&c, channel).await?).unwrap_or(0);
            Ok((self.epoch.clone(), latest))
        })
        .await
    }

    async fn read_since(
        &self,
        channel: &ChannelName,
        since: &StreamPosition,
    ) -> Result<Retained, StoreError> {
        let after = if *since.epoch == *self.epoch {
            i64::try_from(since.offset).unwrap_or(i64::MAX)
        } else {
            0
        };
        self.timed(async {
            let c = self.conn().await?;
            let mut latest = self.latest_of(&c, channel).await?;
            if latest <= after {
                return Ok(Retained {
                    epoch: self.epoch.clone(),
                    latest: u64::try_from(latest).unwrap_or(0),
                    events: Vec::new(),
                });
            }
            // The newest MAX_RESUME_EVENTS unseen, read newest first and turned around.
            let floor = after.max(self.count_floor(latest));
            let stmt = c
                .prepare_cached(
                    "SELECT \"offset\", event FROM courier_events \
                     WHERE channel = $1 AND \"offset\" > $2 AND stored_at >= $3 \
                     ORDER BY \"offset\" DESC LIMIT $4",
                )
                .await
                .map_err(db_error)?;
            let rows = c
                .query(
                    &stmt,
                    &[
                        &channel.as_str(),
                        &floor,
                        &self.cutoff_ms(),
                        &MAX_RESUME_EVENTS,
                    ],
                )
                .await
                .map_err(db_error)?;
            let mut events = Vec::with_capacity(rows.len());
            for r in rows.iter().rev() {
                events.push(self.stored(r.get(0), r.get(1))?);
            }
            if let Some(last) = events.last() {
                latest = latest.max(i64::try_from(last.offset).unwrap_or(0));
            }
            // Appends between the two reads move the count limit on: hold to it as of the
            // newest event read, as one atomic read would have.
            let floor = u64::try_from(self.count_floor(latest)).unwrap_or(0);
            events.retain(|e| e.offset > floor);
            Ok(Retained {
                epoch: self.epoch.clone(),
                latest: u64::try_from(latest).unwrap_or(0),
                events,
            })
        })
        .await
    }

    async fn read_page(
        &self,
        channel: &ChannelName,
        from: PageFrom,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let fetch = i64::try_from(limit.max(1) + 1).unwrap_or(i64::MAX);
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.timed(async {
            let c = self.conn().await?;
            let latest = self.latest_of(&c, channel).await?;
            let floor = self.count_floor(latest);
            let cutoff = self.cutoff_ms();
            let name = channel.as_str();
            let (after, backward, before) = match from {
                PageFrom::After(a) => (as_i64(a).max(floor), false, i64::MAX),
                PageFrom::Before(b) => (floor, true, as_i64(b)),
                PageFrom::Since(ms) => {
                    // The first offset stored at or after `ms`, by the (channel, stored_at)
                    // index.
                    let first = c
                        .query_opt(
                            "SELECT \"offset\" FROM courier_events \
                             WHERE channel = $1 AND stored_at >= $2 \
                             ORDER BY stored_at, \"offset\" LIMIT 1",
                            &[&name, &as_i64(ms).max(cutoff)],
                        )
                        .await
                        .map_err(db_error)?;
                    let after = first.map_or(latest, |r| r.get::<_, i64>(0) - 1);
                    (after.max(floor), false, i64::MAX)
                }
            };
            let sql = if backward {
                "SELECT \"offset\", event FROM courier_events \
                 WHERE channel = $1 AND \"offset\" > $2 AND \"offset\" < $3 AND stored_at >= $4 \
                 ORDER BY \"offset\" DESC LIMIT $5"
            } else {
                "SELECT \"offset\", event FROM courier_events \
                 WHERE channel = $1 AND \"offset\" > $2 AND \"offset\" < $3 AND stored_at >= $4 \
                 ORDER BY \"offset\" LIMIT $5"
            };
            let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
            let rows = c
                .query(&stmt, &[&name, &after, &before, &cutoff, &fetch])
                .await
                .map_err(db_error)?;
            let more = rows.len() > limit.max(1);
            let mut events = Vec::with_capacity(rows.len().min(limit.max(1)));
            let mut newest = latest;
            for r in rows.iter().take(limit.max(1)) {
                let e = self.stored(r.get(0), r.get(1))?;
                newest = newest.max(i64::try_from(e.offset).unwrap_or(0));
                events.push(e);
            }
            Ok(Page {
                epoch: self.epoch.clone(),
                latest: u64::try_from(newest).unwrap_or(0),
                events,
                more,
            })
        })
        .await
    }

    async fn stats(&self) -> HistoryStats {
        // Counting every event would scan the table; like Redis, report nothing here.
        HistoryStats::default()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.timed(async {
            let c = self.conn().await?;
            c.execute("SELECT 1", &[]).await.map_err(db_error)?;
            Ok(())
        })
        .await
    }
}
