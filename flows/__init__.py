"""Prefect flows that run the DVC pipeline (the pipeline issue adds them)."""
