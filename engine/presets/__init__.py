"""Experiment presets and job requests (any process): typed knobs, one request per job kind, the TOML sections and
their validation, output names, plans."""
