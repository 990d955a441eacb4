-- Wayfare's schema for a cluster of nodes sharing one PostgreSQL database.
-- Applied by `wayfare migrate` (or `serve`) inside one transaction that holds an advisory
-- lock, so nodes starting together apply it once. Never edit an applied migration: add
-- the next numbered file.

-- Nodes: each heartbeats its row; the cluster view lists them with the heartbeat's age.
CREATE TABLE nodes (
    id            text PRIMARY KEY,
    address       text NOT NULL,
    version       text NOT NULL,
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL
);

-- Accounts and their wallets. The database refuses an overdraw whatever a node believes:
-- holds never exceed the balance, and neither is ever negative.
CREATE TABLE accounts (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL UNIQUE,          -- normalized: one address, one account
    currency    char(3) NOT NULL,
    balance     bigint NOT NULL CHECK (balance >= 0),
    held        bigint NOT NULL CHECK (held >= 0),
    next_seq    bigint NOT NULL CHECK (next_seq >= 1),
    created_at  timestamptz NOT NULL,
    CHECK (held <= balance)
);

-- SHA-256 digests of customers' API keys; unique, so a digest names one account.
CREATE TABLE api_keys (
    account_id  uuid PRIMARY KEY REFERENCES accounts (id),
    digest      bytea NOT NULL UNIQUE
);

-- Open holds of each wallet: their sum is accounts.held.
CREATE TABLE wallet_holds (
    account_id  uuid NOT NULL REFERENCES accounts (id),
    hold_id     text NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    PRIMARY KEY (account_id, hold_id)
);

-- The ledger: one row per wallet change; balance and held of an account always equal the
-- fold of its rows (checked by the tests and the drill).
CREATE TABLE ledger (
    account_id     uuid NOT NULL REFERENCES accounts (id),
    seq            bigint NOT NULL CHECK (seq >= 1),
    key            text NOT NULL,
    op             jsonb NOT NULL,
    delta          bigint NOT NULL,
    balance_after  bigint NOT NULL,
    held_after     bigint NOT NULL,
    at             timestamptz NOT NULL,
    PRIMARY KEY (account_id, seq)
);

-- Wallet idempotency keys: a replay finds its ledger row (seq) and gets the same receipt.
-- seq 0 is a tombstone: a release of a hold that never landed, so the late hold is refused.
CREATE TABLE wallet_keys (
    account_id  uuid NOT NULL REFERENCES accounts (id),
    key         text NOT NULL,
    op          jsonb NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 0),
    PRIMARY KEY (account_id, key)
);

-- Booking sagas. record is the full saga record (its history included, codec-encoded);
-- state and terminal are copied out of it for queries. owner_node, lease_expires_at and
-- epoch are the lease: only the owner drives the saga, every write is fenced by epoch.
CREATE TABLE sagas (
    id                text PRIMARY KEY,            -- the saga id as wayfare prints it
    account_id        uuid,
    state             text NOT NULL,
    terminal          boolean NOT NULL,
    record            bytea NOT NULL,
    owner_node        text,
    lease_expires_at  timestamptz,
    epoch             bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX sagas_claimable ON sagas (lease_expires_at) WHERE NOT terminal;
CREATE INDEX sagas_by_account ON sagas (account_id, created_at);
CREATE INDEX sagas_by_owner ON sagas (owner_node) WHERE NOT terminal;

-- Booking idempotency keys, global to the cluster: the same Idempotency-Key sent to two
-- nodes finds one saga. request_digest tells a replay from a reuse with another request.
CREATE TABLE booking_keys (
    key             text PRIMARY KEY,
    request_digest  bytea NOT NULL,
    saga_id         text NOT NULL REFERENCES sagas (id)
);

-- Customer emails, written in the transaction that confirms (or ends) their saga and
-- claimed by one node's mailer at a time, with the same lease discipline as sagas.
CREATE TABLE outbox (
    id                uuid PRIMARY KEY,
    saga_id           text,
    status            text NOT NULL CHECK (status IN ('pending', 'sent')),
    email             bytea NOT NULL,
    owner_node        text,
    lease_expires_at  timestamptz,
    epoch             bigint NOT NULL DEFAULT 0,
    attempts          integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL,
    sent_at           timestamptz
);
CREATE INDEX outbox_pending ON outbox (created_at) WHERE status = 'pending';

-- Small facts about the store (e.g. that the demo accounts were seeded).
CREATE TABLE meta (
    key    text PRIMARY KEY,
    value  bytea NOT NULL
);
