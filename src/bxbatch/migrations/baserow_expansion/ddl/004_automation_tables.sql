-- bxbatch: phase=schema
-- Automation tables (guide, Phase 1). Foreign keys: see 010_foreign_keys.sql.
CREATE TABLE IF NOT EXISTS database_automation (
    id serial PRIMARY KEY,
    name varchar(255) NOT NULL,
    description text,
    table_id integer,
    is_active boolean DEFAULT TRUE,
    created_by_id integer,
    created_at timestamp with time zone DEFAULT now(),
    updated_at timestamp with time zone DEFAULT now()
);

CREATE TABLE IF NOT EXISTS database_automationstep (
    id serial PRIMARY KEY,
    automation_id integer,
    step_type varchar(50) NOT NULL, -- 'trigger' or 'action'
    step_class varchar(100) NOT NULL,
    configuration jsonb DEFAULT '{}',
    order_index integer NOT NULL,
    is_active boolean DEFAULT TRUE
);

CREATE TABLE IF NOT EXISTS database_automationexecution (
    id serial PRIMARY KEY,
    automation_id integer,
    triggered_by_id integer,
    trigger_data jsonb DEFAULT '{}',
    status varchar(20) DEFAULT 'pending', -- pending, running, completed, failed
    started_at timestamp with time zone DEFAULT now(),
    completed_at timestamp with time zone,
    error_message text,
    execution_log jsonb DEFAULT '[]'
);
