-- API keys, uploads and jobs: the job store of record.
CREATE TABLE api_keys (
    key_hash     bytea PRIMARY KEY,            -- sha256 of the key; the key itself is never stored
    owner        text NOT NULL,
    label        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE uploads (
    id           uuid PRIMARY KEY,
    owner        text NOT NULL,
    object_key   text NOT NULL,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    media_type   text NOT NULL,
    width        integer,
    height       integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX uploads_expiry ON uploads (expires_at);

CREATE TABLE jobs (
    id                 uuid PRIMARY KEY,        -- UUIDv7: time ordered, the pagination cursor
    owner              text NOT NULL,
    run_id             text,
    idempotency_key    text,
    request_digest     bytea NOT NULL,
    phase              text NOT NULL CHECK (phase IN
                         ('PENDING','QUEUED','EXECUTING','COMPLETED','ERROR','ABORTED','ARCHIVED')),
    pool               text NOT NULL,
    priority_class     text NOT NULL,
    priority           smallint NOT NULL,
    request            jsonb NOT NULL,          -- {"inputs": [...], "pipeline": [...]}
    created_at         timestamptz NOT NULL DEFAULT now(),
    enqueued_at        timestamptz,             -- NULL: not yet confirmed by the broker (outbox)
    started_at         timestamptz,
    ended_at           timestamptz,
    destruction_at     timestamptz NOT NULL,
    execution_duration integer NOT NULL,
    attempts           integer NOT NULL DEFAULT 0,
    lease_token        uuid,
    lease_expires_at   timestamptz,
    worker             text,
    progress           real NOT NULL DEFAULT 0,
    progress_message   text,
    results            jsonb,
    error              jsonb
);
CREATE UNIQUE INDEX jobs_owner_idempotency ON jobs (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_owner_id ON jobs (owner, id DESC);
CREATE INDEX jobs_outbox ON jobs (created_at) WHERE enqueued_at IS NULL AND phase = 'QUEUED';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE phase = 'EXECUTING';
CREATE INDEX jobs_destruction ON jobs (destruction_at) WHERE phase <> 'ARCHIVED';
