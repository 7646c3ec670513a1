"""Prefect flows that run the DVC pipeline: :func:`flows.pipeline.pipeline`."""
