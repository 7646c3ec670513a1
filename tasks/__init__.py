"""Prefect tasks, one per DVC stage (the pipeline issue adds them)."""
