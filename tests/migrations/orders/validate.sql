-- Validation expectations of the orders migration (migration.toml [validate]); $1 = sample size.

-- name: order_country
-- Every order's customer_country is its customer's country (NULL without a customer).
WITH want AS (
    SELECT o.id, c.country AS want, o.customer_country AS have
    FROM orders AS o LEFT JOIN customers AS c ON c.id = o.customer_id
),
missing AS (SELECT id FROM want WHERE have IS NULL AND want IS NOT NULL),
wrong AS (SELECT id FROM want WHERE have IS NOT NULL AND have IS DISTINCT FROM want)
SELECT (SELECT count(*) FROM want WHERE want IS NOT NULL) AS expected,
       (SELECT count(*) FROM want WHERE have IS NOT NULL) AS actual,
       (SELECT count(*) FROM missing) AS missing,
       (SELECT array_agg(format('order %s', id)) FROM (SELECT id FROM missing ORDER BY id LIMIT $1) s) AS missing_sample,
       0::bigint AS extra,
       NULL::text[] AS extra_sample,
       (SELECT count(*) FROM wrong) AS wrong,
       (SELECT array_agg(format('order %s', id)) FROM (SELECT id FROM wrong ORDER BY id LIMIT $1) s) AS wrong_sample

-- name: customer_totals
-- One row per customer with the count and sum of its orders.
WITH want AS (
    SELECT c.id, count(o.id) AS orders, coalesce(sum(o.amount_cents), 0) AS total
    FROM customers AS c LEFT JOIN orders AS o ON o.customer_id = c.id
    GROUP BY c.id
),
have AS (SELECT customer_id AS id, orders, total_cents AS total FROM customer_totals),
missing AS (SELECT id FROM want EXCEPT SELECT id FROM have),
extra AS (SELECT id FROM have EXCEPT SELECT id FROM want),
wrong AS (
    SELECT h.id FROM have AS h JOIN want AS w ON w.id = h.id
    WHERE h.orders <> w.orders OR h.total <> w.total
)
SELECT (SELECT count(*) FROM want) AS expected,
       (SELECT count(*) FROM have) AS actual,
       (SELECT count(*) FROM missing) AS missing,
       (SELECT array_agg(id::text) FROM (SELECT id FROM missing ORDER BY id LIMIT $1) s) AS missing_sample,
       (SELECT count(*) FROM extra) AS extra,
       (SELECT array_agg(id::text) FROM (SELECT id FROM extra ORDER BY id LIMIT $1) s) AS extra_sample,
       (SELECT count(*) FROM wrong) AS wrong,
       (SELECT array_agg(id::text) FROM (SELECT id FROM wrong ORDER BY id LIMIT $1) s) AS wrong_sample

-- name: totals_without_customer
SELECT count(*) AS n,
       (SELECT array_agg(customer_id::text) FROM (
            SELECT customer_id FROM customer_totals AS t
            WHERE NOT EXISTS (SELECT 1 FROM customers AS c WHERE c.id = t.customer_id)
            ORDER BY customer_id LIMIT $1) s) AS sample
FROM customer_totals AS t
WHERE NOT EXISTS (SELECT 1 FROM customers AS c WHERE c.id = t.customer_id)
