"""screens of the llmtui app."""
