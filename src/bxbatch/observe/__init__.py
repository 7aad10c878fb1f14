"""What an operator sees: logs, console lines, progress bars, the index monitor, metrics, report, history."""
