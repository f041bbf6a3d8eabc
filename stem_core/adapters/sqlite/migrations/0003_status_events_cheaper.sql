-- status_events, cheaper to append to: every status write inserts one row, and each
-- b-tree it touches is one more page the commit writes to the WAL (a status write was
-- about 13 pages, a publish about 5).
--   * no AUTOINCREMENT: its sqlite_sequence row was one page per write. Ids are still
--     never reused, so watchers' cursors (id > last seen) stay valid: a new row gets
--     max(id) + 1 and the trim (queries.sql, status_events_old) always keeps the newest.
--   * no index on created_at: the trim walks the table from its oldest id up to the
--     first row young enough, and deletes what it walked (rows are appended in time
--     order, so the walk costs what it deletes).
-- The last id handed out is carried over (as a placeholder row when the log is empty),
-- so no new event reuses an id a watcher may already have passed.

CREATE TABLE status_events_next (
    id         INTEGER PRIMARY KEY,
    ns         TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at REAL NOT NULL
);
INSERT INTO status_events_next (id, ns, task_id, body, created_at)
SELECT id, ns, task_id, body, created_at FROM status_events;
INSERT INTO status_events_next (id, ns, task_id, body, created_at)
SELECT seq, '', '', '', 0 FROM sqlite_sequence
 WHERE name = 'status_events' AND seq > coalesce((SELECT max(id) FROM status_events_next), 0);
DROP TABLE status_events;
ALTER TABLE status_events_next RENAME TO status_events;
CREATE INDEX status_events_task ON status_events (ns, task_id, id);
DELETE FROM sqlite_sequence WHERE name = 'status_events';
