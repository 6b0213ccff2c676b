"""Reusable widgets of the app (TUI process)."""
