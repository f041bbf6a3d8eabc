-- Broker tables of one namespace schema ({schema}).
--
-- jobs: one row per live message. state is 'ready' (deliverable now), 'delayed' (waits
-- for ready_at) or 'leased' (held until locked_until, by locked_by). Every claim and
-- operator requeue bumps lease, and receipts carry it: a settle with an older lease
-- matches no row (fencing). Due delayed rows and expired leases are moved back to
-- 'ready' by the consumers' maintenance statement (queries.sql: maintain).
CREATE TABLE {schema}.jobs (
    id             bigserial   PRIMARY KEY,
    msg_id         text        NOT NULL,
    queue          text        NOT NULL,
    name           text        NOT NULL,
    priority       smallint    NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    state          text        NOT NULL CHECK (state IN ('ready', 'delayed', 'leased')),
    ready_at       timestamptz NOT NULL DEFAULT now(),
    visibility_ms  integer     CHECK (visibility_ms > 0),
    lease          bigint      NOT NULL DEFAULT 0,
    delivery_count integer     NOT NULL DEFAULT 0,
    locked_by      text,
    locked_until   timestamptz,
    envelope       jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
) WITH (
    -- A queue table churns: vacuum it after a fixed number of dead rows, not a fraction.
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
-- Claim order: priority, then age, then publish order; only ready rows are indexed.
CREATE INDEX jobs_ready ON {schema}.jobs (queue, priority DESC, ready_at, id) WHERE state = 'ready';
CREATE INDEX jobs_delayed ON {schema}.jobs (queue, ready_at) WHERE state = 'delayed';
CREATE INDEX jobs_leased ON {schema}.jobs (queue, locked_until) WHERE state = 'leased';
CREATE INDEX jobs_msg_id ON {schema}.jobs (msg_id);

-- Per-queue counters, kept by the triggers below in the same transaction as every change,
-- so queue_stats reads one row per queue instead of counting messages.
CREATE TABLE {schema}.queue_counts (
    queue           text   PRIMARY KEY,
    ready           bigint NOT NULL DEFAULT 0,
    delayed         bigint NOT NULL DEFAULT 0,
    leased          bigint NOT NULL DEFAULT 0,
    dead            bigint NOT NULL DEFAULT 0,
    enqueued_total  bigint NOT NULL DEFAULT 0,
    completed_total bigint NOT NULL DEFAULT 0
);

-- Dead letters: one per (queue, msg_id); dead-lettering the same id again replaces it.
CREATE TABLE {schema}.dead_letters (
    id       bigserial   PRIMARY KEY,
    msg_id   text        NOT NULL,
    queue    text        NOT NULL,
    name     text        NOT NULL,
    reason   text        NOT NULL,
    meta     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    envelope jsonb       NOT NULL,
    dead_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (queue, msg_id)
);
CREATE INDEX dead_letters_age ON {schema}.dead_letters (queue, dead_at, id);

-- Broadcasts: a copy for every subscriber whose cursor is below the row's id. Rows are
-- inserted under a per-channel advisory lock, so ids commit in order and a cursor never
-- skips a late commit. Rows every live subscriber has read are deleted.
CREATE TABLE {schema}.broadcasts (
    id         bigserial   PRIMARY KEY,
    channel    text        NOT NULL,
    envelope   jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX broadcasts_channel ON {schema}.broadcasts (channel, id);
CREATE TABLE {schema}.subscribers (
    subscription text        NOT NULL,
    channel      text        NOT NULL,
    consumer     text        NOT NULL,
    cursor       bigint      NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, channel)
);
CREATE INDEX subscribers_channel ON {schema}.subscribers (channel, cursor);

-- Counter maintenance for jobs. One function for the three statement-level triggers
-- (transition tables allow one event per trigger). After updating a queue's counters it
-- wakes idle consumers with NOTIFY '{queue_channel}': payload 'q:<queue>' only when the
-- queue went from nothing ready to something ready, 'd:<queue>' when it gained delayed
-- rows (idle consumers recompute when to look again). Under load no NOTIFY is sent at
-- all, which keeps the NOTIFY commit lock out of the hot path.
CREATE FUNCTION {schema}.jobs_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    after_ready bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR r IN SELECT queue,
                        count(*) FILTER (WHERE state = 'ready') AS dr,
                        count(*) FILTER (WHERE state = 'delayed') AS dd,
                        count(*) FILTER (WHERE state = 'leased') AS dl,
                        count(*) AS enq
                   FROM new_rows GROUP BY queue LOOP
            INSERT INTO {schema}.queue_counts AS c (queue, ready, delayed, leased, enqueued_total)
            VALUES (r.queue, r.dr, r.dd, r.dl, r.enq)
            ON CONFLICT (queue) DO UPDATE
               SET ready = c.ready + excluded.ready, delayed = c.delayed + excluded.delayed,
                   leased = c.leased + excluded.leased, enqueued_total = c.enqueued_total + excluded.enqueued_total
            RETURNING c.ready INTO after_ready;
            IF r.dr > 0 AND after_ready - r.dr <= 0 THEN
                PERFORM pg_notify('{queue_channel}', 'q:' || r.queue);
            END IF;
            IF r.dd > 0 THEN
                PERFORM pg_notify('{queue_channel}', 'd:' || r.queue);
            END IF;
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        -- An ack marks its own statement with stem.completing (queries.sql: ack), so
        -- completed_total counts acks only, not removals or dead letters.
        UPDATE {schema}.queue_counts AS c
           SET ready = c.ready - d.dr, delayed = c.delayed - d.dd, leased = c.leased - d.dl,
               completed_total = c.completed_total
                   + CASE WHEN current_setting('stem.completing', true) = 'on' THEN d.n ELSE 0 END
          FROM (SELECT queue,
                       count(*) FILTER (WHERE state = 'ready') AS dr,
                       count(*) FILTER (WHERE state = 'delayed') AS dd,
                       count(*) FILTER (WHERE state = 'leased') AS dl,
                       count(*) AS n
                  FROM old_rows GROUP BY queue) AS d
         WHERE c.queue = d.queue;
    ELSE
        FOR r IN SELECT queue, sum(dr) AS dr, sum(dd) AS dd, sum(dl) AS dl
                   FROM (SELECT queue,
                                (state = 'ready')::int AS dr, (state = 'delayed')::int AS dd, (state = 'leased')::int AS dl
                           FROM new_rows
                         UNION ALL
                         SELECT queue,
                                -(state = 'ready')::int, -(state = 'delayed')::int, -(state = 'leased')::int
                           FROM old_rows) AS x
                  GROUP BY queue
                 HAVING sum(dr) <> 0 OR sum(dd) <> 0 OR sum(dl) <> 0 LOOP
            INSERT INTO {schema}.queue_counts AS c (queue, ready, delayed, leased)
            VALUES (r.queue, r.dr, r.dd, r.dl)
            ON CONFLICT (queue) DO UPDATE
               SET ready = c.ready + excluded.ready, delayed = c.delayed + excluded.delayed,
                   leased = c.leased + excluded.leased
            RETURNING c.ready INTO after_ready;
            IF r.dr > 0 AND after_ready - r.dr <= 0 THEN
                PERFORM pg_notify('{queue_channel}', 'q:' || r.queue);
            END IF;
            IF r.dd > 0 THEN
                PERFORM pg_notify('{queue_channel}', 'd:' || r.queue);
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON {schema}.jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {schema}.jobs_count();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON {schema}.jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {schema}.jobs_count();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON {schema}.jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {schema}.jobs_count();

CREATE FUNCTION {schema}.dead_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {schema}.queue_counts AS c (queue, dead)
        SELECT queue, count(*) FROM new_rows GROUP BY queue
        ON CONFLICT (queue) DO UPDATE SET dead = c.dead + excluded.dead;
    ELSE
        UPDATE {schema}.queue_counts AS c SET dead = c.dead - d.n
          FROM (SELECT queue, count(*) AS n FROM old_rows GROUP BY queue) AS d
         WHERE c.queue = d.queue;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER dead_count_insert AFTER INSERT ON {schema}.dead_letters
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {schema}.dead_count();
CREATE TRIGGER dead_count_delete AFTER DELETE ON {schema}.dead_letters
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {schema}.dead_count();
