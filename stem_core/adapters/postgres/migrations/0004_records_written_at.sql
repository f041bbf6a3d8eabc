-- records.written_at: when each record was last put (the database clock), so a poller
-- reads only what is new (``ResultBackend.list_records(since=...)``: workers refreshing
-- revocations at each heartbeat). Rows written before count as written now.
ALTER TABLE {schema}.records ADD COLUMN written_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX records_written ON {schema}.records (kind, written_at);
CREATE INDEX records_expiry ON {schema}.records (expires_at) WHERE expires_at IS NOT NULL;
