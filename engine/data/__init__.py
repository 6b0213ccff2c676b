"""Datasets and prompts (any process, no torch): the task registry, Parquet loading, the one prompt builder."""
