"""Live safety: the throttle, the database's health signals, control from another process, stopping."""
