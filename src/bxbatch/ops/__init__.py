"""Operations the CLI calls: run/resume a migration, plan, status, rollback."""
