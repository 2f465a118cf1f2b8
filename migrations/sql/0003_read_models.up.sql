-- Read models are disposable (DESIGN.md rule 2): projections write them, the rebuild
-- command empties and replays them from the event store.

-- Where each projection is in its stream, written in the same transaction as its rows.
CREATE TABLE projection_checkpoints
(
    projection      text PRIMARY KEY,
    stream_sequence bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agencies
(
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    status     text        NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    -- The sequence of the last event applied: makes the projection idempotent and lets a
    -- command wait until its own event is visible (read your writes).
    version    bigint      NOT NULL
);

CREATE INDEX agencies_created_at_idx ON agencies (created_at, id);
