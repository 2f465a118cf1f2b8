-- The users read model. Email and display name stay sealed with each person's data key
-- (see projections/src/users.rs): no read model holds them in clear.
CREATE TABLE users
(
    id                  uuid PRIMARY KEY,
    agency_id           uuid        NOT NULL,
    email_sealed        text        NOT NULL,
    display_name_sealed text        NOT NULL,
    roles               text[]      NOT NULL,
    status              text        NOT NULL CHECK (status IN ('active', 'deactivated')),
    mfa_enabled         boolean     NOT NULL,
    service_account     boolean     NOT NULL,
    locked_until        timestamptz,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    version             bigint      NOT NULL
);

CREATE INDEX users_agency_idx ON users (agency_id, created_at, id);
