-- Fan-out and fan-in: a job whose operation fans out (e.g. mosaic) plans tasks, each task runs
-- on any worker of the pool, and the job's combine step runs once when the last task is done.
--
-- The job's own row says where it is: stage NULL (a plain job, or planning under its lease),
-- 'tasks' (its tasks run; the job holds no lease and no worker slot), 'combine' (combining,
-- under a lease again). tasks_done counts COMPLETED tasks; it is raised in the transaction that
-- completes a task, so exactly one task completion sees tasks_done = tasks_total.
ALTER TABLE jobs ADD COLUMN stage text CHECK (stage IN ('tasks', 'combine'));
ALTER TABLE jobs ADD COLUMN plan bytea;          -- the operation's shared state (opaque)
ALTER TABLE jobs ADD COLUMN tasks_total integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN tasks_done integer NOT NULL DEFAULT 0;

CREATE TABLE job_tasks (
    job_id            uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx               integer NOT NULL CHECK (idx >= 0),
    label             text NOT NULL,
    inputs            integer[] NOT NULL,         -- indexes into the job's input files
    payload           bytea NOT NULL,
    phase             text NOT NULL DEFAULT 'QUEUED'
                        CHECK (phase IN ('QUEUED', 'EXECUTING', 'COMPLETED', 'ERROR')),
    attempts          integer NOT NULL DEFAULT 0,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    worker            text,
    outputs           jsonb,                      -- [{name, media_type, key}] in the store
    error             jsonb,
    started_at        timestamptz,
    ended_at          timestamptz,
    PRIMARY KEY (job_id, idx)
);
