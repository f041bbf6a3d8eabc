-- schedules: the schedule store (docs/schedules.md). One JSON document per id with a
-- version every write bumps: saves are compare-and-set on it (the beats' fencing token).
CREATE TABLE {schema}.schedules (
    id      text PRIMARY KEY,
    version bigint NOT NULL,
    doc     jsonb NOT NULL
);
