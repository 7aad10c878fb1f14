"""Synthetic shop install for the orders migration: customers and orders, deterministic per scale and seed."""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

COUNTRIES = ["FR", "DE", "NL", "Česko", "O'Hara Land", None]


@dataclass(frozen=True)
class ShopReport:
    customers: int
    orders: int
    orders_without_customer: int
    seconds: float
    seed: int
    scale: float

    def summary(self) -> str:
        return f"{self.orders:,} orders of {self.customers:,} customers"


async def generate(conn: asyncpg.Connection, *, scale: float, seed: int = 42) -> ShopReport:
    """customers (~20,000 at scale 1, id gaps, NULL countries) and orders (~200,000, id gaps, some without customer)."""
    started = time.monotonic()
    n_customers, n_orders = max(60, round(20_000 * scale)), max(600, round(200_000 * scale))
    await conn.execute(
        """
        CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, country text);
        CREATE TABLE orders (
            id bigserial PRIMARY KEY,
            customer_id integer,
            amount_cents integer NOT NULL,
            created_at timestamp with time zone NOT NULL
        );
        """
    )
    await conn.execute(
        """INSERT INTO customers (name, country)
        SELECT 'customer ' || g, ($3::text[])[1 + (hashint8extended(g, $2) & 1023) % cardinality($3::text[])]
        FROM generate_series(1, $1::int) AS g""",
        n_customers,
        seed,
        COUNTRIES,
    )
    await conn.execute("DELETE FROM customers WHERE id % 17 = 0")  # gaps
    await conn.execute(
        """INSERT INTO orders (customer_id, amount_cents, created_at)
        SELECT CASE WHEN h % 25 = 0 THEN NULL ELSE ids[1 + h % cardinality(ids)] END,
               100 + h % 100000,
               timestamptz '2024-01-01' + make_interval(secs => h % 31536000)
        FROM generate_series(1, $1::int) AS g,
             LATERAL (SELECT hashint8extended(g, $2 + 1) & 2147483647 AS h) AS x,
             (SELECT array_agg(id ORDER BY id) AS ids FROM customers) AS c""",
        n_orders,
        seed,
    )
    await conn.execute("DELETE FROM orders WHERE id % 13 = 0")  # gaps
    await conn.execute("ANALYZE customers; ANALYZE orders")
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM customers) AS c, (SELECT count(*) FROM orders) AS o, "
        "(SELECT count(*) FROM orders WHERE customer_id IS NULL) AS n"
    )
    assert row is not None
    return ShopReport(int(row["c"]), int(row["o"]), int(row["n"]), round(time.monotonic() - started, 3), seed, scale)
