"""modals of the llmtui app."""
