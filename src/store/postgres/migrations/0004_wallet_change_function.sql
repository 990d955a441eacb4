-- A wallet change in one round trip: `SELECT * FROM wayfare_wallet_change(...)` locks the
-- account row, answers a replayed idempotency key with its ledger row, applies the wallet
-- rule and writes the totals, the hold, the ledger row, the key and the announcement of
-- the account's new version, all inside the statement's own transaction.
--
-- The rule is the same as `Wallet::apply` in src/domain/wallet.rs, and a property test
-- (tests/postgres.rs) runs random operation sequences through both and requires the same
-- answers. On a refusal the function returns the wallet as it found it, and the node runs
-- `Wallet::apply` on it for the exact error, so error texts are defined once, in Rust.
--
-- p_kind: credit | hold | capture | release; p_currency/p_amount: the amount (credit,
-- hold); p_hold: the hold id (hold, capture, release); p_max: MAX_AMOUNT_MINOR.
CREATE FUNCTION wayfare_wallet_change(
    p_account uuid, p_key text, p_op jsonb, p_kind text, p_hold text,
    p_currency text, p_amount bigint, p_max bigint, p_at timestamptz)
RETURNS TABLE (
    o_status text, o_currency text, o_balance bigint, o_held bigint,
    o_hold_ids text[], o_hold_amounts bigint[],
    o_seq bigint, o_key text, o_op jsonb, o_delta bigint,
    o_balance_after bigint, o_held_after bigint, o_at timestamptz, o_version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    acc accounts%ROWTYPE;
    seen wallet_keys%ROWTYPE;
    led ledger%ROWTYPE;
    amt bigint;
    d bigint := 0;
    new_balance bigint;
    new_held bigint;
    refused boolean := false;
BEGIN
    SELECT * INTO acc FROM accounts a WHERE a.id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        o_status := 'no_account';
        RETURN NEXT;
        RETURN;
    END IF;
    o_currency := acc.currency;
    o_balance := acc.balance;
    o_held := acc.held;
    o_version := acc.version;

    -- A key seen before: the same operation replays its ledger row, another conflicts.
    SELECT * INTO seen FROM wallet_keys k WHERE k.account_id = p_account AND k.key = p_key;
    IF FOUND THEN
        IF seen.op <> p_op THEN
            o_status := 'conflict';
            RETURN NEXT;
            RETURN;
        END IF;
        o_status := 'replay';
        o_seq := seen.seq;
        SELECT * INTO led FROM ledger l WHERE l.account_id = p_account AND l.seq = seen.seq;
        IF FOUND THEN
            o_key := led.key; o_op := led.op; o_delta := led.delta;
            o_balance_after := led.balance_after; o_held_after := led.held_after; o_at := led.at;
        END IF;
        RETURN NEXT;
        RETURN;
    END IF;

    new_balance := acc.balance;
    new_held := acc.held;
    IF p_kind IN ('credit', 'hold') THEN
        refused := p_currency IS DISTINCT FROM acc.currency OR p_amount IS NULL
            OR p_amount <= 0 OR p_amount > p_max;
    END IF;
    IF refused THEN
        NULL;
    ELSIF p_kind = 'credit' THEN
        IF acc.balance > 9223372036854775807 - p_amount THEN
            refused := true;
        ELSE
            new_balance := acc.balance + p_amount;
            d := p_amount;
        END IF;
    ELSIF p_kind = 'hold' THEN
        IF p_hold IS NULL OR p_hold !~ '^[!-~]{1,128}$'
           OR EXISTS (SELECT 1 FROM wallet_holds h WHERE h.account_id = p_account AND h.hold_id = p_hold)
           OR p_amount > acc.balance - acc.held THEN
            refused := true;
        ELSE
            INSERT INTO wallet_holds (account_id, hold_id, amount) VALUES (p_account, p_hold, p_amount);
            new_held := acc.held + p_amount;
        END IF;
    ELSIF p_kind IN ('capture', 'release') THEN
        DELETE FROM wallet_holds h WHERE h.account_id = p_account AND h.hold_id = p_hold
            RETURNING h.amount INTO amt;
        IF NOT FOUND THEN
            refused := true;
            IF p_kind = 'release' THEN
                -- A release of a hold that never landed leaves a tombstone under the
                -- hold's own key, so the late hold is refused.
                INSERT INTO wallet_keys (account_id, key, op, seq) VALUES (p_account, p_hold, p_op, 0)
                    ON CONFLICT DO NOTHING;
            END IF;
        ELSIF p_kind = 'capture' THEN
            new_balance := acc.balance - amt;
            new_held := acc.held - amt;
            d := -amt;
        ELSE
            new_held := acc.held - amt;
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown wallet operation %', p_kind;
    END IF;

    IF refused THEN
        o_status := 'refused';
        SELECT coalesce(array_agg(h.hold_id ORDER BY h.hold_id), '{}'),
               coalesce(array_agg(h.amount ORDER BY h.hold_id), '{}')
          INTO o_hold_ids, o_hold_amounts
          FROM wallet_holds h WHERE h.account_id = p_account;
        RETURN NEXT;
        RETURN;
    END IF;

    UPDATE accounts SET balance = new_balance, held = new_held, next_seq = acc.next_seq + 1,
                        version = acc.version + 1
     WHERE id = p_account;
    INSERT INTO ledger (account_id, seq, key, op, delta, balance_after, held_after, at)
         VALUES (p_account, acc.next_seq, p_key, p_op, d, new_balance, new_held, p_at);
    INSERT INTO wallet_keys (account_id, key, op, seq) VALUES (p_account, p_key, p_op, acc.next_seq);
    PERFORM pg_notify('wayfare_account', p_account::text || ' ' || (acc.version + 1));
    o_status := 'ok';
    o_seq := acc.next_seq; o_key := p_key; o_op := p_op; o_delta := d;
    o_balance_after := new_balance; o_held_after := new_held; o_at := p_at;
    o_version := acc.version + 1;
    RETURN NEXT;
END;
$$;
