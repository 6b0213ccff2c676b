"""llmtui's headless core: no textual, no rich, heavy ML imports only inside functions (any process)."""

__version__ = "0.1.0"
