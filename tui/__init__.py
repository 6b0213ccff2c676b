"""llmtui's user side (TUI and CLI processes): the Textual app and the ``llmtui`` command; never imports torch."""
