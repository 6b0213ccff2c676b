"""The ``llmtui`` command (CLI process): ``main.py`` parses, one module per subcommand."""
