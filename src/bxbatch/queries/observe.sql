-- Named queries of the observability part: the time series (bxbatch.sample), the history of
-- runs (live ledger and archive) and the report's data. Loaded by sqlfiles.queries("observe").

-- name: insert_samples
INSERT INTO bxbatch.sample (run_id, host, pid, at, phase, concurrency, max_concurrency, chunk_scale, duty,
                            mode, reason, signals, probe_ms, probe_baseline_ms, rows, indexes)
SELECT $1, $2, $3, to_timestamp(s.at), s.phase, s.concurrency, s.max_concurrency, s.chunk_scale, s.duty,
       s.mode, s.reason, coalesce(s.signals, '{}'), s.probe_ms, s.probe_baseline_ms, coalesce(s.rows, '{}'),
       coalesce(s.indexes, '{}')
FROM jsonb_to_recordset($4::jsonb) AS s(at double precision, phase text, concurrency integer, max_concurrency integer,
                                       chunk_scale double precision, duty double precision, mode text, reason text,
                                       signals jsonb, probe_ms double precision, probe_baseline_ms double precision,
                                       rows jsonb, indexes jsonb)
ON CONFLICT DO NOTHING
