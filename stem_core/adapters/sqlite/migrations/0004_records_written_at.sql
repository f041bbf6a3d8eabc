-- records.written_at: when each record was last put (the database clock, POSIX seconds),
-- so a poller reads only what is new (``ResultBackend.list_records(since=...)``: workers
-- refreshing revocations at each heartbeat). Rows written before have none: full
-- listings still return them, listings "since" a time do not.
ALTER TABLE records ADD COLUMN written_at REAL;
CREATE INDEX records_written ON records (ns, kind, written_at);
