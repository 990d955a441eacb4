-- Less work for the database on every saga write (issue 22: the database's CPU per
-- booking). A booking's saga is written three to four times; each write that changes an
-- indexed column (or a column of an index's predicate) puts a new entry into every index
-- of the table, while a write that changes none is a HOT update: the new row version goes
-- on the same page and no index is touched.

-- Claiming expired sagas reads the unfinished ones (the sagas in flight, a small set) and
-- checks their lease there: the lease expiry, renewed by every write, is no longer an
-- indexed column, so a step's write is a HOT update.
DROP INDEX sagas_claimable;
CREATE INDEX sagas_unfinished ON sagas (id) WHERE NOT terminal;
-- No statement looks sagas up by owner: a lease is always named by its saga id, and the
-- per-node count of live leases (nodes.rs) reads the unfinished sagas through
-- sagas_unfinished.
DROP INDEX sagas_by_owner;
-- An account's bookings are listed in id order (`account_sagas`), not by creation time:
-- the index now gives that order, so a page reads only the rows it returns.
DROP INDEX sagas_by_account;
CREATE INDEX sagas_by_account ON sagas (account_id, id) WHERE account_id IS NOT NULL;
-- Room on each page for the next versions of its rows, so those updates can be HOT (a
-- saga's record is under a kilobyte; an email's claim and retries change no indexed
-- column either). Pages written from now on keep it.
ALTER TABLE sagas SET (fillfactor = 70);
ALTER TABLE outbox SET (fillfactor = 80);
