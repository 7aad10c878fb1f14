-- bxbatch: phase=schema
-- Field type tables (guide, Phase 1). Foreign keys: see 010_foreign_keys.sql.
CREATE TABLE IF NOT EXISTS database_progressbarfield (
    field_ptr_id integer PRIMARY KEY,
    source_type varchar(20) DEFAULT 'numeric_field',
    source_field_id integer,
    formula_expression text,
    min_value decimal(10, 2) DEFAULT 0,
    max_value decimal(10, 2) DEFAULT 100,
    color_scheme varchar(20) DEFAULT 'blue_to_green',
    show_percentage boolean DEFAULT TRUE
);

CREATE TABLE IF NOT EXISTS database_peoplefield (
    field_ptr_id integer PRIMARY KEY,
    allow_multiple boolean DEFAULT FALSE,
    notify_on_change boolean DEFAULT TRUE,
    restrict_to_workspace boolean DEFAULT TRUE
);

CREATE TABLE IF NOT EXISTS database_formulafield (
    field_ptr_id integer PRIMARY KEY,
    expression text NOT NULL,
    result_type varchar(50) DEFAULT 'text',
    dependencies jsonb DEFAULT '[]',
    syntax_valid boolean DEFAULT TRUE,
    error_message text
);

CREATE TABLE IF NOT EXISTS database_rollupfield (
    field_ptr_id integer PRIMARY KEY,
    linked_field_id integer,
    target_field_id integer,
    aggregation_function varchar(20) DEFAULT 'sum',
    result_type varchar(50) DEFAULT 'number'
);

CREATE TABLE IF NOT EXISTS database_lookupfield (
    field_ptr_id integer PRIMARY KEY,
    linked_field_id integer,
    target_field_id integer,
    result_type varchar(50) DEFAULT 'text'
);
