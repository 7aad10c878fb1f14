-- bxbatch: phase=schema
-- Dashboard tables (guide, Phase 1). Foreign keys: see 010_foreign_keys.sql.
-- public_slug's UNIQUE is declared with the (empty, new) table: no lock on existing data.
CREATE TABLE IF NOT EXISTS database_dashboard (
    id serial PRIMARY KEY,
    name varchar(255) NOT NULL,
    description text,
    workspace_id integer,
    layout jsonb DEFAULT '{}',
    is_public boolean DEFAULT FALSE,
    public_slug varchar(100) UNIQUE,
    created_by_id integer,
    created_at timestamp with time zone DEFAULT now(),
    updated_at timestamp with time zone DEFAULT now()
);

CREATE TABLE IF NOT EXISTS database_dashboardwidget (
    id serial PRIMARY KEY,
    dashboard_id integer,
    widget_type varchar(50) NOT NULL,
    title varchar(255),
    configuration jsonb DEFAULT '{}',
    position jsonb DEFAULT '{}',
    size jsonb DEFAULT '{}',
    data_source jsonb DEFAULT '{}',
    created_at timestamp with time zone DEFAULT now(),
    updated_at timestamp with time zone DEFAULT now()
);
