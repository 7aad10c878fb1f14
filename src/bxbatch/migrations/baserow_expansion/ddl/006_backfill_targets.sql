-- bxbatch: phase=schema
-- The two tables the guide's backfills (Phase 3) write into but never define.

-- One row per grid view ('table' type), with the guide's defaults.
CREATE TABLE IF NOT EXISTS database_tableview_enhanced (
    view_ptr_id integer PRIMARY KEY,
    sticky_headers boolean NOT NULL DEFAULT TRUE,
    conditional_formatting jsonb NOT NULL DEFAULT '[]',
    column_grouping jsonb NOT NULL DEFAULT '[]',
    filter_presets jsonb NOT NULL DEFAULT '[]'
);

-- One row per (user, resource). resource_id is polymorphic (resource_type says what it
-- points at), so it has no foreign key. The unique key is the permission backfill's
-- natural key: ON CONFLICT DO NOTHING relies on it, and it replaces the guide's
-- NOT EXISTS probe.
CREATE TABLE IF NOT EXISTS database_permission (
    id serial PRIMARY KEY,
    user_id integer NOT NULL,
    resource_type varchar(20) NOT NULL,
    resource_id integer NOT NULL,
    permission_level varchar(20) NOT NULL,
    granted_by_id integer,
    granted_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT database_permission_user_resource_key UNIQUE (user_id, resource_type, resource_id)
);
