"""One module per ``llmtui`` subcommand; each has ``register(subparsers)``."""
