-- Identity's write-side tables, beside the event store.

-- The email registry: one user per address, case-insensitively, enforced before the
-- registration is stored. It holds a keyed hash of the address (a blind index), never the
-- address itself.
CREATE TABLE user_emails
(
    email_index text PRIMARY KEY,
    user_id     uuid        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Each person's data key (wrapped under the server key). Personal data in events is sealed
-- with it; deleting the row erases the person (crypto-shredding) and the history stays whole.
CREATE TABLE user_data_keys
(
    user_id     uuid PRIMARY KEY,
    wrapped_key text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
