"""Migrations: the file format the engine loads (DDL files, backfill jobs, expectations) and the shipped ones."""
