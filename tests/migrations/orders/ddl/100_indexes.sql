-- bxbatch: phase=indexes
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_orders_customer_country ON orders (customer_country);
