"""The four main screens of the app and the comparison view (TUI process)."""
