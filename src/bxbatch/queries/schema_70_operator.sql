-- The ledger, operator part: who owns a run and since when, the live knobs and phase hold of
-- `bxbatch set` / `hold-before`, and what `status` needs to tell a rate limit from full speed.
-- Idempotent DDL (ledger.ensure_schema runs it only when the ledger's fingerprint changed).
ALTER TABLE bxbatch.run ADD COLUMN IF NOT EXISTS owned_since timestamptz;
-- `bxbatch set KEY=VALUE`: the settings changed while the run goes on ({"max_rows_per_second": 500, ...})
ALTER TABLE bxbatch.control ADD COLUMN IF NOT EXISTS knobs jsonb NOT NULL DEFAULT '{}';
-- `bxbatch hold-before PHASE`: the run waits before this phase until `bxbatch release`
ALTER TABLE bxbatch.control ADD COLUMN IF NOT EXISTS hold_before text;
ALTER TABLE bxbatch.throttle_state ADD COLUMN IF NOT EXISTS rate_limit double precision NOT NULL DEFAULT 0;
ALTER TABLE bxbatch.throttle_state ADD COLUMN IF NOT EXISTS duty double precision NOT NULL DEFAULT 1;
ALTER TABLE bxbatch.throttle_state ADD COLUMN IF NOT EXISTS throttle_on boolean NOT NULL DEFAULT true;
