-- The version of an account's view: raised by every change of what a read shows (a wallet
-- change, a new API key), in the transaction that makes it, which also sends
-- `NOTIFY wayfare_account` with the id and the new version. Nodes keep account views in
-- memory and serve one only while no newer version was heard (store/postgres/views.rs).
ALTER TABLE accounts ADD COLUMN version bigint NOT NULL DEFAULT 0;
