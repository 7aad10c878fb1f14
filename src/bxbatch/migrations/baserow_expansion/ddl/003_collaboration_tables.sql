-- bxbatch: phase=schema
-- Collaboration tables (guide, Phase 1). Foreign keys: see 010_foreign_keys.sql.
CREATE TABLE IF NOT EXISTS database_comment (
    id serial PRIMARY KEY,
    table_id integer,
    row_id integer NOT NULL,
    user_id integer,
    content text NOT NULL,
    parent_id integer,
    created_at timestamp with time zone DEFAULT now(),
    updated_at timestamp with time zone DEFAULT now(),
    resolved boolean DEFAULT FALSE,
    resolved_by_id integer,
    resolved_at timestamp with time zone
);

-- Differs from the guide: id is bigserial, not serial. The log gains a row for every
-- existing user row and every later insert, update and delete of every user table; a
-- 4-byte id would run out on a large install.
CREATE TABLE IF NOT EXISTS database_activitylog (
    id bigserial PRIMARY KEY,
    user_id integer,
    workspace_id integer,
    table_id integer,
    row_id integer,
    field_id integer,
    action_type varchar(50) NOT NULL,
    details jsonb DEFAULT '{}',
    "timestamp" timestamp with time zone DEFAULT now(),
    ip_address inet,
    user_agent text
);

CREATE TABLE IF NOT EXISTS database_userpresence (
    id serial PRIMARY KEY,
    user_id integer,
    table_id integer,
    view_id integer,
    last_seen timestamp with time zone DEFAULT now(),
    cursor_position jsonb,
    is_active boolean DEFAULT TRUE
);
