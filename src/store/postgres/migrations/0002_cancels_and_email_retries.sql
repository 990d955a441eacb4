-- A customer's cancel, stored by whichever node received it: the node driving the saga
-- acts on it at its next step, and a confirmed booking with one stays claimable until its
-- cancellation saga exists (so a node dying in between loses nothing).
ALTER TABLE sagas ADD COLUMN cancel_requested_at timestamptz;

-- Bounded email retries: a failed attempt waits (exponential backoff) before the next,
-- and an email that keeps failing is parked with its last error for an operator.
ALTER TABLE outbox ADD COLUMN next_attempt_at timestamptz;
ALTER TABLE outbox ADD COLUMN last_error text;
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'sent', 'parked'));
CREATE INDEX outbox_parked ON outbox (created_at) WHERE status = 'parked';

-- One address, one account whatever its case, as on sled (`domain::account::email_key`:
-- trimmed and lowercased); the column's own UNIQUE only refused exact repeats.
CREATE UNIQUE INDEX accounts_email_normalized ON accounts (lower(btrim(email)));
