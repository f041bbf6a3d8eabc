-- publish.lua: append many messages to one queue (ready -> band stream, future -> delayed).
--
-- KEYS: the queue's 20-key block (lib.lua).
-- ARGV: [1] records, concatenated; each is "<due us>,<band>,<ready us>,<lease ms>,
--       <id bytes>,<json bytes>:" followed by the envelope id and the envelope JSON
--       (one argument instead of six per message keeps a batch cheap to send).
-- A message is delayed when its due time is after the server's clock (counted in enq;
-- ready ones are counted by the band streams' entries-added): lib.lua publish_records.
-- Reply: how many were stored.

return publish_records(block(0), ARGV[1])
