-- Result backend tables of one namespace schema ({schema}).
--
-- statuses: the latest status of each task. queue and task are generated from meta so
-- list_statuses filters are index range scans, newest updated_at first. Rows past
-- expires_at are invisible to reads and deleted by the backend's cleanup loop.
CREATE TABLE {schema}.statuses (
    task_id    text        PRIMARY KEY,
    state      text        NOT NULL,
    payload    jsonb,
    error      jsonb,
    attempt    integer     NOT NULL DEFAULT 0,
    meta       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    queue      text        GENERATED ALWAYS AS (meta ->> 'queue') STORED,
    task       text        GENERATED ALWAYS AS (meta ->> 'task') STORED,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.05);
CREATE INDEX statuses_updated ON {schema}.statuses (updated_at DESC, task_id);
CREATE INDEX statuses_state ON {schema}.statuses (state, updated_at DESC, task_id);
CREATE INDEX statuses_queue ON {schema}.statuses (queue, updated_at DESC, task_id) WHERE queue IS NOT NULL;
CREATE INDEX statuses_task ON {schema}.statuses (task, updated_at DESC, task_id) WHERE task IS NOT NULL;
CREATE INDEX statuses_expires ON {schema}.statuses (expires_at);

CREATE TABLE {schema}.heartbeats (
    worker_id  text        PRIMARY KEY,
    data       jsonb       NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE {schema}.records (
    kind       text        NOT NULL,
    key        text        NOT NULL,
    value      jsonb       NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (kind, key)
);

CREATE TABLE {schema}.audit (
    id     bigserial   PRIMARY KEY,
    record jsonb       NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);
