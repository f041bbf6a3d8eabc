-- Named queries of the SQLite broker and result backend.
--
-- Each block starts with "-- name: <name>". Values are bound parameters (:name); :now is
-- the database clock read once at the start of each transaction (db.db_now), so one
-- transaction sees one instant. Lists of queues or ids travel as one JSON array bound
-- to a parameter and are expanded with json_each, so every statement is prepared once.
-- Counters (queue_counts) are kept by the triggers of migrations/0001_broker.sql.

-- ------------------------------------------------------------------ broker: producing

-- name: publish
INSERT INTO jobs (ns, msg_id, queue, name, priority, state, enqueued_at, not_before, ready_at,
                  visibility_ms, attempt, envelope)
VALUES (:ns, :msg_id, :queue, :name, :priority,
        CASE WHEN :not_before > :now THEN 'delayed' ELSE 'ready' END,
        :enqueued_at, :not_before, :ready_at, :visibility_ms, :attempt, :envelope);

-- ------------------------------------------------------------------ broker: claiming

-- name: promote_due
-- Delayed rows whose time came, in the given queues, become ready.
UPDATE jobs SET state = 'ready'
 WHERE ns = :ns AND state = 'delayed' AND queue IN (SELECT value FROM json_each(:queues)) AND ready_at <= :now;

-- name: reap_expired
-- Expired leases become ready again. The token is kept: until someone else claims the
-- row, its holder can still settle it (or take it back with extend_lease).
UPDATE jobs SET state = 'ready'
 WHERE ns = :ns AND state = 'leased' AND queue IN (SELECT value FROM json_each(:queues))
   AND locked_until <= :now;

-- name: ready_head
-- The best `limit` ready rows of one queue, straight from the jobs_ready index.
SELECT id, priority, ready_at FROM jobs
 WHERE ns = :ns AND queue = :queue AND state = 'ready'
 ORDER BY priority DESC, ready_at, id
 LIMIT :limit;

-- name: claimable
-- Read-only look before taking the write lock: is anything in this queue claimable now?
SELECT EXISTS (SELECT 1 FROM jobs WHERE ns = :ns AND queue = :queue AND state = 'ready')
    OR EXISTS (SELECT 1 FROM jobs WHERE ns = :ns AND queue = :queue AND state = 'delayed' AND ready_at <= :now)
    OR EXISTS (SELECT 1 FROM jobs WHERE ns = :ns AND queue = :queue AND state = 'leased' AND locked_until <= :now);

-- name: lease_rows
UPDATE jobs
   SET state = 'leased', token = token + 1, delivery_count = delivery_count + 1, locked_by = :consumer,
       locked_until = :now + coalesce(visibility_ms, :default_ms) / 1000.0
 WHERE id IN (SELECT value FROM json_each(:ids))
RETURNING id, token, delivery_count, locked_until, queue, msg_id, envelope;

-- name: unlease
-- A claim whose caller was cancelled before it saw the rows: give them back untouched.
UPDATE jobs
   SET state = 'ready', token = token + 1, delivery_count = max(delivery_count - 1, 0),
       locked_by = NULL, locked_until = NULL
 WHERE id = :id AND token = :token AND state = 'leased';

-- name: next_delayed
SELECT ready_at FROM jobs WHERE ns = :ns AND queue = :queue AND state = 'delayed' ORDER BY ready_at LIMIT 1;

-- name: next_expiry
SELECT locked_until FROM jobs WHERE ns = :ns AND queue = :queue AND state = 'leased' ORDER BY locked_until LIMIT 1;

-- name: delete_job
DELETE FROM jobs WHERE id = :id;

-- ------------------------------------------------------------------ broker: settling

-- name: ack
DELETE FROM jobs WHERE id = :id AND token = :token RETURNING ns, queue;

-- name: count_completed
UPDATE queue_counts SET completed_total = completed_total + 1 WHERE ns = :ns AND queue = :queue;

-- name: nack_requeue
UPDATE jobs
   SET state = CASE WHEN :not_before > :now THEN 'delayed' ELSE 'ready' END,
       attempt = :attempt, not_before = :not_before, ready_at = :ready_at, envelope = :envelope,
       token = token + 1, locked_by = NULL, locked_until = NULL
 WHERE id = :id AND token = :token;

-- name: nack_drop
DELETE FROM jobs WHERE id = :id AND token = :token;

-- name: extend_lease
-- Also takes back a lease that expired but was not yet claimed by anyone else.
UPDATE jobs SET state = 'leased', locked_until = :now + :seconds
 WHERE id = :id AND token = :token
RETURNING locked_until;

-- name: take_job
DELETE FROM jobs WHERE id = :id AND token = :token RETURNING queue, msg_id, name, envelope;

-- ------------------------------------------------------------------ broker: inspecting

-- name: list_queues
SELECT queue FROM queue_counts
 WHERE ns = :ns AND ready + delayed + leased + dead > 0
 ORDER BY queue;

-- name: queue_counts
-- Counters, corrected by the (few) rows that fell due since the last claim: delayed rows
-- whose time came and expired leases count as pending. Both are index range counts over
-- overdue rows only, so the cost does not grow with the queue.
SELECT c.ready, c.delayed, c.leased, c.dead, c.enqueued_total, c.completed_total,
       (SELECT count(*) FROM jobs
         WHERE ns = :ns AND queue = :queue AND state = 'delayed' AND ready_at <= :now),
       (SELECT count(*) FROM jobs
         WHERE ns = :ns AND queue = :queue AND state = 'leased' AND locked_until <= :now)
  FROM queue_counts AS c
 WHERE c.ns = :ns AND c.queue = :queue;

-- name: oldest_pending
-- One index probe per priority level on jobs_ready (the oldest row of each band), plus
-- the oldest overdue delayed row and the oldest expired lease.
SELECT min(t) FROM (
    SELECT (SELECT ready_at FROM jobs
             WHERE ns = :ns AND queue = :queue AND state = 'ready' AND priority = p.column1
             ORDER BY ready_at LIMIT 1) AS t
      FROM (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS p
    UNION ALL
    SELECT ready_at FROM (SELECT ready_at FROM jobs
                           WHERE ns = :ns AND queue = :queue AND state = 'delayed' AND ready_at <= :now
                           ORDER BY ready_at LIMIT 1)
    UNION ALL
    SELECT min(ready_at) FROM jobs
     WHERE ns = :ns AND queue = :queue AND state = 'leased' AND locked_until <= :now
);

-- Peeking: the first page by offset (``peek``, and ``peek_page`` without a cursor); the
-- *_after queries are the pages after a cursor (the last row's key), each part an index
-- seek past the key (a row-value comparison would seek on its first column only, then
-- walk every tie), so a page costs the same however deep it is. Rows end with the key.
--
-- Peeking writes nothing (it runs in a read transaction, never waiting for the write
-- lock a stopped or hung process may hold): each state is read as a consumer would find
-- it at :now. Pending is the ready rows plus the overdue ones a claim would move back
-- first (delayed rows whose time came, expired leases; they keep their sort key when
-- they move). Those are few while any consumer runs, since every claim moves them; when
-- none runs they are the same index range queue_counts counts, sorted here whole.
-- Delayed and in-flight leave out the rows that have fallen due.

-- name: peek_pending
SELECT * FROM (SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
                WHERE ns = :ns AND queue = :queue AND state = 'ready'
                ORDER BY priority DESC, ready_at, id LIMIT :limit + :offset)
UNION ALL
SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
 WHERE ns = :ns AND queue = :queue
   AND ((state = 'delayed' AND ready_at <= :now) OR (state = 'leased' AND locked_until <= :now))
 ORDER BY priority DESC, ready_at, id LIMIT :limit OFFSET :offset;

-- name: peek_delayed
SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
 WHERE ns = :ns AND queue = :queue AND state = 'delayed' AND ready_at > :now
 ORDER BY ready_at, id LIMIT :limit OFFSET :offset;

-- name: peek_inflight
SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
 WHERE ns = :ns AND queue = :queue AND state = 'leased' AND locked_until > :now
 ORDER BY locked_until, id LIMIT :limit OFFSET :offset;

-- name: peek_pending_after
-- After (:priority, :at, :id) in (priority desc, ready_at, id) order.
SELECT * FROM (SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
                WHERE ns = :ns AND queue = :queue AND state = 'ready'
                  AND priority = :priority AND ready_at = :at AND id > :id
                ORDER BY id LIMIT :limit)
UNION ALL
SELECT * FROM (SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
                WHERE ns = :ns AND queue = :queue AND state = 'ready' AND priority = :priority AND ready_at > :at
                ORDER BY ready_at, id LIMIT :limit)
UNION ALL
SELECT * FROM (SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
                WHERE ns = :ns AND queue = :queue AND state = 'ready' AND priority < :priority
                ORDER BY priority DESC, ready_at, id LIMIT :limit)
UNION ALL
SELECT * FROM (SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
                WHERE ns = :ns AND queue = :queue
                  AND ((state = 'delayed' AND ready_at <= :now) OR (state = 'leased' AND locked_until <= :now))
                  AND (priority < :priority
                       OR (priority = :priority AND (ready_at > :at OR (ready_at = :at AND id > :id)))))
 ORDER BY priority DESC, ready_at, id LIMIT :limit;

-- name: peek_delayed_after
-- After (:at, :id) in (ready_at, id) order (jobs_delayed holds the rowid after ready_at).
SELECT * FROM (SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
                WHERE ns = :ns AND queue = :queue AND state = 'delayed' AND ready_at = :at AND id > :id
                  AND ready_at > :now
                ORDER BY id LIMIT :limit)
UNION ALL
SELECT * FROM (SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
                WHERE ns = :ns AND queue = :queue AND state = 'delayed' AND ready_at > max(:at, :now)
                ORDER BY ready_at, id LIMIT :limit)
 ORDER BY ready_at, id LIMIT :limit;

-- name: peek_inflight_after
-- After (:at, :id) in (locked_until, id) order.
SELECT * FROM (SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
                WHERE ns = :ns AND queue = :queue AND state = 'leased' AND locked_until = :at AND id > :id
                  AND locked_until > :now
                ORDER BY id LIMIT :limit)
UNION ALL
SELECT * FROM (SELECT id, msg_id, queue, envelope, locked_by, locked_until, delivery_count, priority, ready_at FROM jobs
                WHERE ns = :ns AND queue = :queue AND state = 'leased' AND locked_until > max(:at, :now)
                ORDER BY locked_until, id LIMIT :limit)
 ORDER BY locked_until, id LIMIT :limit;

-- ------------------------------------------------------------------ broker: repairing

-- name: requeue_leased
-- The token bump fences the old holder: its later ack or nack matches nothing.
UPDATE jobs SET state = 'ready', token = token + 1, locked_by = NULL, locked_until = NULL
 WHERE ns = :ns AND queue = :queue AND state = 'leased' AND msg_id IN (SELECT value FROM json_each(:ids));

-- name: delayed_by_ids
SELECT id, envelope FROM jobs
 WHERE ns = :ns AND queue = :queue AND state = 'delayed' AND msg_id IN (SELECT value FROM json_each(:ids));

-- name: make_ready_now
UPDATE jobs SET state = 'ready', not_before = :now, ready_at = :now, envelope = :envelope, token = token + 1
 WHERE id = :id AND state = 'delayed';

-- name: remove_ids
DELETE FROM jobs WHERE ns = :ns AND queue = :queue AND msg_id IN (SELECT value FROM json_each(:ids));

-- name: purge_queue
DELETE FROM jobs WHERE ns = :ns AND queue = :queue AND state IN ('ready', 'delayed');

-- name: drop_queue_jobs
-- A control reply queue is used once: when its client purges it, every row goes.
DELETE FROM jobs WHERE ns = :ns AND queue = :queue;

-- name: drop_queue_counts
DELETE FROM queue_counts WHERE ns = :ns AND queue = :queue AND dead = 0;

-- name: stale_reply_jobs
-- Backstop for a reply that arrived after its client purged the queue: rows of reply
-- queues (:prefix) enqueued before :before, a bounded batch. queue_counts (one row per
-- queue) finds the reply queues; jobs_msg_id (ns, queue, ...) their rows.
DELETE FROM jobs WHERE id IN (
    SELECT j.id FROM queue_counts c JOIN jobs j ON j.ns = c.ns AND j.queue = c.queue
     WHERE c.ns = :ns AND substr(c.queue, 1, length(:prefix)) = :prefix AND j.enqueued_at < :before
     LIMIT :batch);

-- name: stale_reply_counts
-- Then the counter rows of reply queues left empty, a bounded batch.
DELETE FROM queue_counts WHERE ns = :ns AND queue IN (
    SELECT queue FROM queue_counts
     WHERE ns = :ns AND substr(queue, 1, length(:prefix)) = :prefix AND ready + delayed + leased + dead = 0
     LIMIT :batch);

-- ------------------------------------------------------------------ broker: dead letters

-- name: dead_unlink
DELETE FROM dead_letters WHERE ns = :ns AND queue = :queue AND msg_id = :msg_id;

-- name: dead_insert
INSERT INTO dead_letters (ns, queue, msg_id, name, reason, meta, envelope, dead_at)
VALUES (:ns, :queue, :msg_id, :name, :reason, :meta, :envelope, :now);

-- name: dead_prune
-- The queue's oldest dead letters past retention, a bounded batch (dead_letters_age index).
DELETE FROM dead_letters WHERE id IN (
    SELECT id FROM dead_letters WHERE ns = :ns AND queue = :queue AND dead_at < :before
     ORDER BY dead_at, id LIMIT :batch);

-- name: dead_page
SELECT id, envelope, reason, meta, dead_at FROM dead_letters
 WHERE ns = :ns AND queue = :queue
 ORDER BY dead_at DESC, id DESC LIMIT :limit OFFSET :offset;

-- name: dead_get
SELECT id, envelope, reason, meta, dead_at FROM dead_letters
 WHERE ns = :ns AND queue = :queue AND msg_id = :msg_id;

-- name: dead_oldest
-- Replay and purge candidates, oldest first; :ids and :task are NULL when not filtering.
SELECT id, envelope, reason, meta, dead_at FROM dead_letters
 WHERE ns = :ns AND queue = :queue AND dead_at >= :since
   AND (:task IS NULL OR name = :task)
   AND (:ids IS NULL OR msg_id IN (SELECT value FROM json_each(:ids)))
 ORDER BY dead_at, id LIMIT :limit OFFSET :offset;

-- name: dead_delete
DELETE FROM dead_letters WHERE id IN (SELECT value FROM json_each(:ids));

-- ------------------------------------------------------------------ broker: broadcasts

-- name: broadcast_head
SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'broadcasts'), 0);

-- name: subscribe
INSERT INTO subscribers (ns, subscription, channel, consumer, cursor, seen_at)
VALUES (:ns, :subscription, :channel, :consumer, :cursor, :now)
ON CONFLICT (ns, subscription, channel) DO UPDATE SET cursor = excluded.cursor, seen_at = excluded.seen_at;

-- name: unsubscribe
DELETE FROM subscribers WHERE ns = :ns AND subscription = :subscription;

-- name: has_subscribers
SELECT EXISTS (SELECT 1 FROM subscribers WHERE ns = :ns AND channel = :channel AND seen_at > :stale_before);

-- name: broadcast_insert
INSERT INTO broadcasts (ns, channel, envelope, created_at) VALUES (:ns, :channel, :envelope, :now);

-- name: broadcast_read
SELECT id, envelope FROM broadcasts WHERE ns = :ns AND channel = :channel AND id > :cursor ORDER BY id LIMIT :limit;

-- name: subscriber_touch
UPDATE subscribers SET cursor = :cursor, seen_at = :now
 WHERE ns = :ns AND subscription = :subscription AND channel = :channel;

-- name: subscribers_stale
DELETE FROM subscribers WHERE ns = :ns AND seen_at < :stale_before;

-- name: broadcasts_trim
-- Rows every live subscriber of their channel has passed (all rows of a channel nobody
-- listens to any more).
DELETE FROM broadcasts
 WHERE ns = :ns
   AND id <= coalesce((SELECT min(s.cursor) FROM subscribers AS s
                        WHERE s.ns = broadcasts.ns AND s.channel = broadcasts.channel), id);

-- ------------------------------------------------------------------ results: statuses

-- name: status_created
SELECT created_at, body FROM statuses WHERE ns = :ns AND task_id = :task_id AND expires_at > :now;

-- name: status_event
INSERT INTO status_events (ns, task_id, body, created_at) VALUES (:ns, :task_id, :body, :now);

-- name: status_upsert
INSERT INTO statuses (ns, task_id, state, queue, task, body, seq, created_at, updated_at, expires_at)
VALUES (:ns, :task_id, :state, :queue, :task, :body, :seq, :created_at, :now, :now + :ttl)
ON CONFLICT (ns, task_id) DO UPDATE
   SET state = excluded.state, queue = excluded.queue, task = excluded.task, body = excluded.body,
       seq = excluded.seq, created_at = excluded.created_at, updated_at = excluded.updated_at,
       expires_at = excluded.expires_at;

-- name: status_get
SELECT body FROM statuses WHERE ns = :ns AND task_id = :task_id AND expires_at > :now;

-- name: status_expire
UPDATE statuses SET expires_at = :now + :ttl WHERE ns = :ns AND task_id = :task_id AND expires_at > :now;

-- name: status_last_event
SELECT coalesce(max(id), 0) FROM status_events WHERE ns = :ns AND task_id = :task_id;

-- name: status_events_after
SELECT id, body FROM status_events WHERE ns = :ns AND task_id = :task_id AND id > :cursor ORDER BY id LIMIT :limit;

-- name: statuses_expired
-- A bounded batch (any namespace: expired is expired); see store.cleanup.
DELETE FROM statuses WHERE (ns, task_id) IN (
    SELECT ns, task_id FROM statuses WHERE expires_at <= :now LIMIT :batch);

-- name: status_events_old
-- Rows older than :before among the :batch oldest (ids grow with time; no index on
-- created_at, see migrations/0003), and never the newest row, whose id the next event's
-- id is counted from.
DELETE FROM status_events
 WHERE id IN (SELECT id FROM status_events WHERE id < (SELECT max(id) FROM status_events) ORDER BY id LIMIT :batch)
   AND created_at < :before;

-- ------------------------------------------------------------------ results: heartbeats, records, audit

-- name: heartbeat_put
INSERT INTO heartbeats (ns, worker_id, body, expires_at) VALUES (:ns, :worker_id, :body, :now + :ttl)
ON CONFLICT (ns, worker_id) DO UPDATE SET body = excluded.body, expires_at = excluded.expires_at;

-- name: heartbeat_get
SELECT body FROM heartbeats WHERE ns = :ns AND worker_id = :worker_id AND expires_at > :now;

-- name: heartbeat_list
SELECT body FROM heartbeats WHERE ns = :ns AND expires_at > :now ORDER BY worker_id;

-- name: heartbeats_expired
DELETE FROM heartbeats WHERE expires_at <= :now;

-- name: record_put
INSERT INTO records (ns, kind, key, value, expires_at, written_at) VALUES (:ns, :kind, :key, :value, :now + :ttl, :now)
ON CONFLICT (ns, kind, key) DO UPDATE
   SET value = excluded.value, expires_at = excluded.expires_at, written_at = excluded.written_at;

-- name: record_prune
-- A bounded batch of expired records (any namespace: expired is expired), with each put
-- and in store.cleanup.
DELETE FROM records WHERE (ns, kind, key) IN (
    SELECT ns, kind, key FROM records WHERE expires_at IS NOT NULL AND expires_at <= :now LIMIT :batch);

-- name: record_get
SELECT value FROM records
 WHERE ns = :ns AND kind = :kind AND key = :key AND (expires_at IS NULL OR expires_at > :now);

-- name: record_list
-- :since NULL lists every live record, else those written at or after it.
SELECT key, value FROM records
 WHERE ns = :ns AND kind = :kind AND (expires_at IS NULL OR expires_at > :now)
   AND (:since IS NULL OR written_at >= :since) ORDER BY key;

-- name: record_delete
DELETE FROM records WHERE ns = :ns AND kind = :kind AND key = :key RETURNING expires_at;

-- name: audit_append
INSERT INTO audit (ns, body, created_at) VALUES (:ns, :body, :now);

-- name: audit_prune
-- The namespace's oldest records (ids grow with time), a bounded batch, when past retention.
DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ns = :ns ORDER BY id LIMIT :batch)
   AND created_at < :before;

-- name: audit_page
SELECT body FROM audit WHERE ns = :ns ORDER BY id DESC LIMIT :limit OFFSET :offset;

-- ------------------------------------------------------------------ results: schedules

-- name: schedule_get
SELECT version, doc FROM schedules WHERE ns = :ns AND id = :id;

-- name: schedule_list
SELECT version, doc FROM schedules WHERE ns = :ns ORDER BY id;

-- name: schedule_insert
-- Only when absent: a second creator changes nothing (rowcount 0).
INSERT OR IGNORE INTO schedules (ns, id, version, doc) VALUES (:ns, :id, 1, :doc);

-- name: schedule_update
-- Compare-and-set on the version read (rowcount 0: another writer came first).
UPDATE schedules SET version = version + 1, doc = :doc WHERE ns = :ns AND id = :id AND version = :version;

-- name: schedule_delete
DELETE FROM schedules WHERE ns = :ns AND id = :id AND (:version IS NULL OR version = :version);
