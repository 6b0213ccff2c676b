"""Modal dialogs of the app (TUI process): each a ModalScreen[T] that dismisses with its answer."""
