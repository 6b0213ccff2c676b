"""llmtui's user side: the Textual app and the ``llmtui`` command (never imports torch)."""
