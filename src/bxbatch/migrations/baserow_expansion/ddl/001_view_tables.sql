-- bxbatch: phase=schema
-- View type tables (guide, Phase 1). Foreign keys are added in 010_foreign_keys.sql as
-- NOT VALID (brief locks on the referenced base tables, no scan) and validated later, so
-- the REFERENCES clauses of the guide are not repeated inline here.
CREATE TABLE IF NOT EXISTS database_kanbanview (
    view_ptr_id integer PRIMARY KEY,
    single_select_field_id integer,
    card_cover_image_field_id integer,
    show_card_count boolean DEFAULT TRUE
);

CREATE TABLE IF NOT EXISTS database_timelineview (
    view_ptr_id integer PRIMARY KEY,
    start_date_field_id integer,
    end_date_field_id integer,
    color_field_id integer,
    show_dependencies boolean DEFAULT TRUE,
    zoom_level varchar(10) DEFAULT 'week'
);

CREATE TABLE IF NOT EXISTS database_calendarview (
    view_ptr_id integer PRIMARY KEY,
    date_field_id integer,
    end_date_field_id integer,
    color_field_id integer,
    default_view varchar(10) DEFAULT 'month',
    show_weekends boolean DEFAULT TRUE,
    first_day_of_week integer DEFAULT 1
);
