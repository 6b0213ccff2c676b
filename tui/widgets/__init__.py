"""widgets of the llmtui app."""
