-- Broker tables. Every table carries the namespace in column ns, so several namespaces
-- share one file without seeing each other. Times are POSIX seconds (REAL); leases and
-- due times are compared with the database's clock, julianday('now'), never Python's.

-- jobs: one row per live message.
--   state     'ready' (deliverable), 'delayed' (waits for ready_at) or 'leased' (held by
--             locked_by until locked_until). Consumers move due delayed rows and expired
--             leases back to 'ready' inside their claim transaction.
--   ready_at  max(enqueued_at, not_before): the age order among equal priorities.
--   token     bumped by every claim, nack and operator requeue; a receipt is
--             "<id>:<token>", so a settle with an older receipt matches no row (fencing).
--             It starts at a random 48-bit value, so even if a rowid is reused (ids are
--             plain rowids: AUTOINCREMENT would cost a page write per insert) an old
--             receipt cannot match the new row.
--   envelope  the wire JSON; columns beside it are copies for indexes and inspection.
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY,
    ns             TEXT    NOT NULL,
    msg_id         TEXT    NOT NULL,
    queue          TEXT    NOT NULL,
    name           TEXT    NOT NULL DEFAULT '',
    priority       INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    state          TEXT    NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'delayed', 'leased')),
    enqueued_at    REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    not_before     REAL,
    ready_at       REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    visibility_ms  INTEGER CHECK (visibility_ms > 0),
    attempt        INTEGER NOT NULL DEFAULT 0,
    token          INTEGER NOT NULL DEFAULT (random() & 281474976710655),
    delivery_count INTEGER NOT NULL DEFAULT 0,
    locked_by      TEXT,
    locked_until   REAL,
    envelope       TEXT    NOT NULL
);
-- Claim order (priority, then age, then publish order), ready rows only.
CREATE INDEX jobs_ready ON jobs (ns, queue, priority DESC, ready_at, id) WHERE state = 'ready';
CREATE INDEX jobs_delayed ON jobs (ns, queue, ready_at) WHERE state = 'delayed';
CREATE INDEX jobs_leased ON jobs (ns, queue, locked_until) WHERE state = 'leased';
CREATE INDEX jobs_msg_id ON jobs (ns, queue, msg_id);

-- Per-queue counters, kept by the triggers below in the same transaction as every
-- change (hand-written rows included), so queue_stats reads one row per queue instead
-- of counting messages. completed_total is moved by ack only.
CREATE TABLE queue_counts (
    ns              TEXT    NOT NULL,
    queue           TEXT    NOT NULL,
    ready           INTEGER NOT NULL DEFAULT 0,
    delayed         INTEGER NOT NULL DEFAULT 0,
    leased          INTEGER NOT NULL DEFAULT 0,
    dead            INTEGER NOT NULL DEFAULT 0,
    enqueued_total  INTEGER NOT NULL DEFAULT 0,
    completed_total INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, queue)
) WITHOUT ROWID;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO queue_counts (ns, queue, ready, delayed, leased, enqueued_total)
    VALUES (new.ns, new.queue, new.state = 'ready', new.state = 'delayed', new.state = 'leased', 1)
    ON CONFLICT (ns, queue) DO UPDATE
       SET ready = ready + excluded.ready, delayed = delayed + excluded.delayed,
           leased = leased + excluded.leased, enqueued_total = enqueued_total + 1;
END;

CREATE TRIGGER jobs_count_state AFTER UPDATE OF state ON jobs
WHEN old.state IS NOT new.state AND old.ns = new.ns AND old.queue = new.queue BEGIN
    UPDATE queue_counts
       SET ready = ready + (new.state = 'ready') - (old.state = 'ready'),
           delayed = delayed + (new.state = 'delayed') - (old.state = 'delayed'),
           leased = leased + (new.state = 'leased') - (old.state = 'leased')
     WHERE ns = new.ns AND queue = new.queue;
END;

-- A row moved to another queue or namespace by hand: count it out of one, into the other.
CREATE TRIGGER jobs_count_move AFTER UPDATE OF ns, queue ON jobs
WHEN old.ns IS NOT new.ns OR old.queue IS NOT new.queue BEGIN
    UPDATE queue_counts
       SET ready = ready - (old.state = 'ready'), delayed = delayed - (old.state = 'delayed'),
           leased = leased - (old.state = 'leased')
     WHERE ns = old.ns AND queue = old.queue;
    INSERT INTO queue_counts (ns, queue, ready, delayed, leased)
    VALUES (new.ns, new.queue, new.state = 'ready', new.state = 'delayed', new.state = 'leased')
    ON CONFLICT (ns, queue) DO UPDATE
       SET ready = ready + excluded.ready, delayed = delayed + excluded.delayed, leased = leased + excluded.leased;
END;

CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
    UPDATE queue_counts
       SET ready = ready - (old.state = 'ready'), delayed = delayed - (old.state = 'delayed'),
           leased = leased - (old.state = 'leased')
     WHERE ns = old.ns AND queue = old.queue;
END;

-- Dead letters: one per (ns, queue, msg_id); dead-lettering the same id again replaces it
-- (DELETE then INSERT, so the counters' delete trigger fires: REPLACE would skip it).
-- dead_at is the wall clock with microseconds (SQLite's clock has milliseconds only).
CREATE TABLE dead_letters (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ns       TEXT NOT NULL,
    queue    TEXT NOT NULL,
    msg_id   TEXT NOT NULL,
    name     TEXT NOT NULL,
    reason   TEXT NOT NULL,
    meta     TEXT NOT NULL DEFAULT '{}',
    envelope TEXT NOT NULL,
    dead_at  REAL NOT NULL,
    UNIQUE (ns, queue, msg_id)
);
CREATE INDEX dead_letters_age ON dead_letters (ns, queue, dead_at, id);

CREATE TRIGGER dead_count_insert AFTER INSERT ON dead_letters BEGIN
    INSERT INTO queue_counts (ns, queue, dead) VALUES (new.ns, new.queue, 1)
    ON CONFLICT (ns, queue) DO UPDATE SET dead = dead + 1;
END;

CREATE TRIGGER dead_count_delete AFTER DELETE ON dead_letters BEGIN
    UPDATE queue_counts SET dead = dead - 1 WHERE ns = old.ns AND queue = old.queue;
END;

-- Broadcasts, persisted so they cross processes. A subscription registers one cursor row
-- per channel, starting at the highest id ever assigned (AUTOINCREMENT: ids are never
-- reused, and SQLite's single writer commits them in order, so a cursor never skips a
-- row). Rows every live subscriber has passed, and subscribers not seen for a while,
-- are deleted by the consumers' periodic sweep.
CREATE TABLE broadcasts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ns         TEXT NOT NULL,
    channel    TEXT NOT NULL,
    envelope   TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX broadcasts_channel ON broadcasts (ns, channel, id);

CREATE TABLE subscribers (
    ns           TEXT    NOT NULL,
    subscription TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    consumer     TEXT    NOT NULL,
    cursor       INTEGER NOT NULL,
    seen_at      REAL    NOT NULL,
    PRIMARY KEY (ns, subscription, channel)
) WITHOUT ROWID;
CREATE INDEX subscribers_channel ON subscribers (ns, channel, cursor);
