"""``python -m tui.cli``: the ``llmtui`` command without its console script (CLI process)."""

from tui.cli.main import entry

entry()
