-- Saga writes in one round trip each (issue 22: the database's work per booking).
--
-- `wayfare_create_saga` stores a new saga leased to its node with its booking
-- idempotency key, as one statement: it answers a key used before with that key's request
-- digest and saga, and otherwise inserts both rows. Two nodes inserting the same key at
-- once: the key's primary key makes the second wait for the first, find the key taken,
-- and delete its own saga row again, so the key still names exactly one saga.
--
-- `wayfare_save_sagas` writes a batch of sagas, each under its own lease: element i
-- changes saga i only if owner, epoch and a live lease still match (the fence), and only
-- then also writes what that saga's step caused: the finished booking a cancellation ends,
-- the email, and the announcement of a booked SKU. A fenced element changes nothing and is
-- missing from the answer; the others are written, all in one transaction (one commit, one
-- WAL flush for the whole batch). The answer names each written saga and whether a
-- customer's cancel is stored for it.

CREATE FUNCTION wayfare_create_saga(
    p_id text, p_account uuid, p_state text, p_terminal boolean, p_record bytea,
    p_node text, p_lease_ms bigint, p_trace text, p_key text, p_digest bytea)
RETURNS TABLE (o_digest bytea, o_saga_id text)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_key IS NOT NULL THEN
        RETURN QUERY SELECT k.request_digest, k.saga_id FROM booking_keys k WHERE k.key = p_key;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO sagas (id, account_id, state, terminal, record, owner_node, lease_expires_at,
                       epoch, created_at, updated_at, trace_parent)
         VALUES (p_id, p_account, p_state, p_terminal, p_record, p_node,
                 now() + p_lease_ms * interval '1 millisecond', 1, now(), now(), p_trace);
    IF p_key IS NOT NULL THEN
        INSERT INTO booking_keys (key, request_digest, saga_id) VALUES (p_key, p_digest, p_id)
            ON CONFLICT (key) DO NOTHING;
        IF NOT FOUND THEN
            DELETE FROM sagas WHERE id = p_id;
            RETURN QUERY SELECT k.request_digest, k.saga_id FROM booking_keys k WHERE k.key = p_key;
            RETURN;
        END IF;
    END IF;
    -- No row: the saga is new, leased to p_node under epoch 1.
END;
$$;

CREATE FUNCTION wayfare_save_sagas(
    p_ids text[], p_nodes text[], p_epochs bigint[], p_states text[], p_terminals boolean[],
    p_records bytea[], p_lease_ms bigint,
    p_email_ids uuid[], p_emails bytea[],
    p_finished_ids text[], p_finished_states text[], p_finished_terminals boolean[],
    p_finished_records bytea[],
    p_booked_channel text, p_booked_skus text[])
RETURNS TABLE (o_id text, o_cancel_requested boolean)
LANGUAGE plpgsql AS $$
DECLARE
    cancel boolean;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        UPDATE sagas SET state = p_states[i], record = p_records[i], updated_at = now(),
               terminal = p_terminals[i]
                          AND (cancel_requested_at IS NULL OR p_states[i] <> 'confirmed'),
               lease_expires_at = now() + p_lease_ms * interval '1 millisecond'
         WHERE id = p_ids[i] AND owner_node = p_nodes[i] AND epoch = p_epochs[i]
           AND lease_expires_at > now()
        RETURNING cancel_requested_at IS NOT NULL INTO cancel;
        CONTINUE WHEN NOT FOUND;
        IF p_finished_ids[i] IS NOT NULL THEN
            UPDATE sagas SET state = p_finished_states[i], terminal = p_finished_terminals[i],
                   record = p_finished_records[i], updated_at = now()
             WHERE id = p_finished_ids[i];
        END IF;
        IF p_email_ids[i] IS NOT NULL THEN
            INSERT INTO outbox (id, saga_id, status, email, created_at)
                 VALUES (p_email_ids[i], p_ids[i], 'pending', p_emails[i], now())
                 ON CONFLICT (id) DO NOTHING;
        END IF;
        IF p_booked_skus[i] IS NOT NULL THEN
            PERFORM pg_notify(p_booked_channel, p_booked_skus[i]);
        END IF;
        o_id := p_ids[i];
        o_cancel_requested := cancel;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Only the owner's own lookups used this index, and none does any more (every lease is
-- named by saga id); each saga write paid for keeping it.
DROP INDEX sagas_by_owner;
-- An account's bookings are listed by id (`account_sagas`), not by creation time: the
-- index now serves that order, so the listing reads no more rows than it returns.
DROP INDEX sagas_by_account;
CREATE INDEX sagas_by_account ON sagas (account_id, id) WHERE account_id IS NOT NULL;
