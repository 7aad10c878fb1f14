-- bxbatch: phase=constraints
ALTER TABLE orders VALIDATE CONSTRAINT fk_orders_customer;
ALTER TABLE customer_totals VALIDATE CONSTRAINT fk_customer_totals_customer;
