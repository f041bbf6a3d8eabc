-- schedules: the schedule store (docs/schedules.md). One JSON document per (ns, id) with a
-- version every write bumps: saves are compare-and-set on it (the beats' fencing token).
CREATE TABLE schedules (
    ns      TEXT NOT NULL,
    id      TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL,
    PRIMARY KEY (ns, id)
) WITHOUT ROWID;
