"""``llmtui demo``: build an offline demo workspace (tiny model, synthetic data, presets) (CLI process)."""

from __future__ import annotations

import shlex

from rich.markup import escape

from tui.cli.common import add_workspace_arg, console, workspace_from


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="create an offline demo workspace (tiny model, synthetic data)")
    add_workspace_arg(parser)
    parser.add_argument("--train-rows", type=int, default=1000, help="synthetic training rows per task")
    parser.add_argument("--test-rows", type=int, default=100, help="synthetic test rows per task")
    parser.set_defaults(func=run)


def run(args) -> int:
    from engine.runs.demo import create_demo

    ws = workspace_from(args, must_exist=False)
    ws.root.mkdir(parents=True, exist_ok=True)
    with console.status("building the demo workspace (tokenizer, tiny model, datasets)…"):
        create_demo(ws.root, args.train_rows, args.test_rows)
    root = shlex.quote(str(ws.root))  # a path with a space or `[` stays one argument and is not markup
    console.print(f"demo workspace ready at [bold]{escape(str(ws.root))}[/]\n"
                  f"  open it:   llmtui -w {escape(root)}\n"
                  f"  try:       llmtui -w {escape(root)} plan experiments/boolq-full.toml", highlight=False,
                  soft_wrap=True)  # a long path stays on its line: the hint is meant to be copied
    return 0
