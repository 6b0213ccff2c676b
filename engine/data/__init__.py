"""Datasets and prompts (any process, no torch): task kinds and answer words, the task registry, Parquet loading, the one prompt builder."""
