-- bxbatch: job=order_country source=table key_table=orders key_column=id target=orders
-- orders.customer_country = the country of the order's customer, chunked over orders.id ($1 < id <= $2).
-- Idempotent (IS DISTINCT FROM): a chunk applied again changes nothing.

-- name: chunk
UPDATE orders AS o SET customer_country = c.country
FROM customers AS c
WHERE c.id = o.customer_id AND o.id > $1 AND o.id <= $2 AND o.customer_country IS DISTINCT FROM c.country

-- name: main_bound
SELECT max(id) FROM orders

-- name: expected
SELECT count(*) FROM orders AS o JOIN customers AS c ON c.id = o.customer_id WHERE c.country IS NOT NULL

-- name: set_based
UPDATE orders AS o SET customer_country = c.country
FROM customers AS c
WHERE c.id = o.customer_id AND o.customer_country IS DISTINCT FROM c.country
