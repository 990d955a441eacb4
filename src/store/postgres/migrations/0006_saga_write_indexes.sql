-- Indexes every saga write keeps up to date, cut to those a query uses (issue 22: the
-- database's work per booking). A saga write changes lease_expires_at, so it is never a
-- HOT update: each index of sagas gets a new entry on every write.

-- No statement looks sagas up by owner: a lease is always named by its saga id, and the
-- per-node count of live leases (nodes.rs) reads the few unfinished sagas through
-- sagas_claimable.
DROP INDEX sagas_by_owner;
-- An account's bookings are listed in id order (`account_sagas`), not by creation time:
-- the index now gives that order, so a page reads only the rows it returns.
DROP INDEX sagas_by_account;
CREATE INDEX sagas_by_account ON sagas (account_id, id) WHERE account_id IS NOT NULL;
