-- bxbatch: phase=schema
-- NOT VALID: a brief lock on customers, no scan; validated by 200_validate_foreign_keys.sql.
ALTER TABLE orders ADD CONSTRAINT fk_orders_customer
    FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE SET NULL NOT VALID;

ALTER TABLE customer_totals ADD CONSTRAINT fk_customer_totals_customer
    FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE CASCADE NOT VALID;
