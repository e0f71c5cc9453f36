-- The PostgreSQL history store (crates/courier-server/src/postgres.rs).

-- Settings the store keeps for itself; `epoch` is set once, when the history is created, so
-- it survives restarts and changes only when the database (the history) is lost.
CREATE TABLE courier_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);

-- Each channel's latest offset. An append increments it with an upsert, which holds the
-- row's lock until the append commits: appends to one channel from any number of instances
-- get dense offsets, in commit order.
CREATE TABLE courier_channels (
    channel text PRIMARY KEY,
    latest bigint NOT NULL
);

-- The events. The primary key (channel, offset) is the index every read and page walks
-- (O(log n) to the first event, then in order); `stored_at` (Unix ms, the database's clock,
-- ascending with offsets per channel) serves `since` and retention by age.
CREATE TABLE courier_events (
    channel text NOT NULL,
    "offset" bigint NOT NULL,
    stored_at bigint NOT NULL,
    -- The event exactly as accepted (the core's writer), so replays are byte for byte.
    event text NOT NULL,
    PRIMARY KEY (channel, "offset")
);
CREATE INDEX courier_events_channel_stored_at ON courier_events (channel, stored_at);
CREATE INDEX courier_events_stored_at ON courier_events (stored_at);
