-- Leases are written to the write-ahead log like every other table: crash recovery empties an
-- unlogged table, so a database that crashed and came back within the lease would have lost
-- every lease, and each replica would have dropped its own healthy turns and taken them again
-- (a second, paid model call for a reply already streaming). Fencing never depended on this
-- table, only acquisition does. Renewals are cheap writes (one row per running chat every
-- heartbeat interval).
ALTER TABLE chat_heartbeats SET LOGGED;
