-- Result backend tables; namespace in column ns, times are POSIX seconds on the
-- database's clock. Expired rows are invisible to every read and deleted by a periodic
-- sweep that runs inside an ordinary write.

-- statuses: the latest status of each task. seq is the id of the status_events row that
-- wrote it, so "newest first" is a walk down an index on seq (no sort, no scan), and
-- state/queue/task are columns so each filter has its own index.
CREATE TABLE statuses (
    ns         TEXT    NOT NULL,
    task_id    TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    queue      TEXT,
    task       TEXT,
    body       TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    created_at REAL    NOT NULL,
    updated_at REAL    NOT NULL,
    expires_at REAL    NOT NULL,
    PRIMARY KEY (ns, task_id)
) WITHOUT ROWID;
CREATE INDEX statuses_seq ON statuses (ns, seq);
CREATE INDEX statuses_state ON statuses (ns, state, seq);
CREATE INDEX statuses_queue ON statuses (ns, queue, seq);
CREATE INDEX statuses_task ON statuses (ns, task, seq);
CREATE INDEX statuses_expiry ON statuses (expires_at);

-- status_events: the change log watchers poll by cursor (id > last seen), so a watcher in
-- another process sees every intermediate state, in order. Trimmed by age.
CREATE TABLE status_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ns         TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX status_events_task ON status_events (ns, task_id, id);
CREATE INDEX status_events_age ON status_events (created_at);

CREATE TABLE heartbeats (
    ns         TEXT NOT NULL,
    worker_id  TEXT NOT NULL,
    body       TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (ns, worker_id)
) WITHOUT ROWID;
CREATE INDEX heartbeats_expiry ON heartbeats (expires_at);

-- records: small JSON objects under (kind, key); expires_at NULL means kept forever.
CREATE TABLE records (
    ns         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at REAL,
    PRIMARY KEY (ns, kind, key)
) WITHOUT ROWID;
CREATE INDEX records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ns         TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX audit_ns ON audit (ns, id);
