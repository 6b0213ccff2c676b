"""Experiment presets (any process): the typed TOML sections and their validation, output names, plans."""
