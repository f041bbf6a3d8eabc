-- Peek pages by keyset cursor (inspect.py): the next page is the rows after the last
-- one's (ready_at, id) or (locked_until, id). Ending these two indexes with id lets that
-- be one index seek however many rows share a time (a batch claimed in one transaction
-- shares its locked_until), instead of a walk over the ties. Claims and maintenance use
-- the leading columns as before.
DROP INDEX {schema}.jobs_delayed;
CREATE INDEX jobs_delayed ON {schema}.jobs (queue, ready_at, id) WHERE state = 'delayed';
DROP INDEX {schema}.jobs_leased;
CREATE INDEX jobs_leased ON {schema}.jobs (queue, locked_until, id) WHERE state = 'leased';
