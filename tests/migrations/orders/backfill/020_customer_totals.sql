-- bxbatch: job=customer_totals source=table key_table=customers key_column=id target=customer_totals
-- One customer_totals row per customer: its orders and their sum, chunked over customers.id.

-- name: chunk
INSERT INTO customer_totals (customer_id, orders, total_cents)
SELECT c.id, count(o.id), coalesce(sum(o.amount_cents), 0)
FROM customers AS c LEFT JOIN orders AS o ON o.customer_id = c.id
WHERE c.id > $1 AND c.id <= $2
GROUP BY c.id
ORDER BY c.id
ON CONFLICT (customer_id) DO NOTHING

-- name: main_bound
SELECT max(id) FROM customers

-- name: expected
SELECT count(*) FROM customers

-- name: set_based
INSERT INTO customer_totals (customer_id, orders, total_cents)
SELECT c.id, count(o.id), coalesce(sum(o.amount_cents), 0)
FROM customers AS c LEFT JOIN orders AS o ON o.customer_id = c.id
GROUP BY c.id
ON CONFLICT (customer_id) DO NOTHING
