-- Named queries of the constraint phase (phases/constraints.py). Loaded by sqlfiles.queries("constraints").
-- The orphan checks and cleanings themselves are composed from catalog identifiers (quoted by
-- db.quote_ident) in phases/constraints.py; every value is a bind parameter.

-- name: fk_info
-- A foreign key by (schema, table, name): its state, ON DELETE action, columns in key order, and
-- the referencing table's single-column primary key (NULL when it has none or a composite one).
SELECT con.conname, con.convalidated, con.confdeltype::text AS on_delete, con.confmatchtype::text AS match_type,
       n.nspname AS table_schema, c.relname AS table_name,
       rn.nspname AS ref_schema, rc.relname AS ref_table,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns,
       ARRAY(SELECT a.attnotnull FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord) AS not_null,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord) AS ref_columns,
       (SELECT a.attname::text FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = con.conrelid AND i.indisprimary AND i.indnkeyatts = 1) AS pk_column
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class rc ON rc.oid = con.confrelid
JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.contype = 'f' AND n.nspname = $1 AND c.relname = $2 AND con.conname = $3
