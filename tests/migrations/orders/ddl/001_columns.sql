-- bxbatch: phase=schema
-- A new nullable column without a default (a catalog change only, no table rewrite) and a new table.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS customer_country text;

CREATE TABLE IF NOT EXISTS customer_totals (
    customer_id integer PRIMARY KEY,
    orders integer NOT NULL,
    total_cents bigint NOT NULL,
    updated_at timestamp with time zone NOT NULL DEFAULT now()
);
