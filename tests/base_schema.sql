-- A minimal pre-expansion base schema for tests that need no data (synth builds the realistic one).
CREATE TABLE auth_user (id serial PRIMARY KEY, username varchar(150) NOT NULL);
CREATE TABLE database_workspace (id serial PRIMARY KEY, name varchar(165) NOT NULL);
CREATE TABLE database_workspaceuser (
    id serial PRIMARY KEY,
    workspace_id int NOT NULL REFERENCES database_workspace (id),
    user_id int NOT NULL REFERENCES auth_user (id),
    permissions jsonb
);
CREATE TABLE database_database (id serial PRIMARY KEY, workspace_id int NOT NULL REFERENCES database_workspace (id));
CREATE TABLE database_table (
    id serial PRIMARY KEY,
    database_id int NOT NULL REFERENCES database_database (id),
    created_by_id int REFERENCES auth_user (id)
);
CREATE TABLE database_field (id serial PRIMARY KEY, table_id int NOT NULL REFERENCES database_table (id));
CREATE TABLE database_view (
    id serial PRIMARY KEY,
    table_id int NOT NULL REFERENCES database_table (id),
    type varchar(32) NOT NULL
);
