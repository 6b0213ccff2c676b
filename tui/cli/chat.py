"""``llmtui chat MODEL``: talk to a model in the terminal (a quick check without the TUI); the CLI process loads
the model itself (:class:`engine.runs.chat.ChatSession`). ``llmtui chat A B [C] -m …`` (or ``--item boolq:42``,
or ``--json``) is the Arena's headless twin: each model answers in its own ``chat-server`` child, all at once
(:mod:`tui.arena_servers`), side by side or as JSON. Runs in the CLI process."""

from __future__ import annotations

import sys

from engine.arena import MAX_MODELS
from tui.cli.common import (add_trust_arg, add_workspace_arg, console, err_console, fail, print_json,
                            workspace_from)

#: Tokens an answer may have unless --max-tokens (or --item, the task's evaluation limit) says otherwise.
DEFAULT_MAX_TOKENS = 256


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat", help="chat with a model in the terminal (streams the answer)",
        description="Load MODEL and answer each line you type, streaming the reply. The prompt is rendered by "
                    "the same prompt builder evaluation uses; --task takes that task's system prompt. Greedy "
                    "unless --temperature > 0. An empty line or end of input (ctrl+d) quits. With two or three "
                    "models (the Arena), or --item, or --json: each model answers the one message (-m) or test "
                    "item (--item) in its own server process, all at once, with the same decoding.")
    add_workspace_arg(parser)
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help=f"a model name in Models/ or a model folder (up to {MAX_MODELS}: the Arena)")
    parser.add_argument("--task", help="take the system prompt of this task (arc, boolq, squad, openmath, or custom); "
                                       "in the Arena also extract each answer as the task's scorer does")
    parser.add_argument("--item", metavar="TASK:INDEX",
                        help="ask test item INDEX of TASK's test set exactly as evaluation did (boolq:42), and set "
                             "each answer beside the model's recorded prediction")
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed (the same for every model)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model (the Arena)")
    parser.add_argument("--system", help="a system prompt of your own (instead of --task's)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="default 256, or with --item the task's evaluation limit")
    parser.add_argument("--show-prompt", action="store_true", help="print the rendered prompt before each answer")
    parser.add_argument("-m", "--message", action="append", default=[],
                        help="send this message (repeatable) instead of reading from the terminal")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    add_trust_arg(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from engine.data.tasks import DatasetError, get_task
    from engine.models.folder import ModelLoadError
    from engine.models.resolve import ModelNotFoundError, resolve_model_folder
    from engine.runs.chat import ChatRequestError, ChatSession, ChatSettings

    if len(args.models) > 1 or args.item or args.json:
        return run_arena(args)
    ws = workspace_from(args)
    system = args.system
    try:
        model_dir = resolve_model_folder(ws, args.models[0])
        if args.task and system is None:
            system = get_task(args.task, ws.datasets_dir).system_prompt
        settings = ChatSettings.from_request({"temperature": args.temperature, "top_p": args.top_p,
                                              "max_new_tokens": args.max_tokens or DEFAULT_MAX_TOKENS,
                                              "seed": args.seed})
    except (ModelNotFoundError, DatasetError, ChatRequestError) as exc:
        fail(str(exc))
    err_console.print(f"loading {model_dir.name}…", highlight=False)
    try:
        session = ChatSession(model_dir, device=args.device, trust_remote_code=args.trust_remote_code)
    except (ModelLoadError, OSError, ValueError) as exc:
        fail(f"cannot load {model_dir}: {exc}", code=1)
    err_console.print(f"[bold]{model_dir.name}[/] ({session.loaded.kind}, {session.loaded.info.get('device')}) — "
                      "an empty line quits", highlight=False)
    history: list[dict[str, str]] = []
    scripted = list(args.message)
    while True:
        if scripted:
            message = scripted.pop(0)
            print(f"> {message}")
        elif args.message:
            break
        else:
            try:
                message = input("> ")
            except EOFError:
                break
        if not message.strip():
            break
        history.append({"role": "user", "content": message})
        prompt = session.render(history, system)
        if args.show_prompt:
            err_console.print("[dim]── prompt ──[/]", highlight=False)
            err_console.print(prompt, markup=False, highlight=False)
            err_console.print("[dim]────────────[/]", highlight=False)
        answer, tokens, _ = session.generate(prompt, settings, lambda text: (sys.stdout.write(text), sys.stdout.flush()))
        print()
        history.append({"role": "assistant", "content": answer})
    return 0


def run_arena(args) -> int:
    """Every model answers the one message or item at once, each in its own server; side by side or JSON."""
    from engine.arena import ArenaError, ArenaItem, column_json, load_arena_item, workspace_placements
    from engine.data.tasks import DatasetError, TaskSpec, get_task
    from engine.jobs.gpu import NvmlInventory
    from engine.models.resolve import ModelNotFoundError, resolve_model_folder
    from engine.runs.chat import ChatRequestError, ChatSettings
    from tui.arena_servers import answer_once

    ws = workspace_from(args)
    if len(args.models) > MAX_MODELS:
        fail(f"the Arena compares at most {MAX_MODELS} models, got {len(args.models)}")
    if len(args.message) > 1 or (not args.message and not args.item) or (args.message and args.item):
        fail("the Arena asks one thing: give one -m MESSAGE, or --item TASK:INDEX")
    try:
        names = [resolve_model_folder(ws, model).name for model in args.models]
        item: ArenaItem | None = load_arena_item(ws, args.item, names) if args.item else None
        task: TaskSpec | None = item.task if item else get_task(args.task, ws.datasets_dir) if args.task else None
        if item is not None and args.task and get_task(args.task, ws.datasets_dir) != item.task:
            raise ArenaError(f"--task {args.task} is not the task of --item {args.item}")
        max_tokens = args.max_tokens or (item.task.max_new_tokens if item else DEFAULT_MAX_TOKENS)
        settings = ChatSettings.from_request({"temperature": args.temperature, "top_p": args.top_p,
                                              "max_new_tokens": max_tokens, "seed": args.seed})
    except (ModelNotFoundError, DatasetError, ArenaError, ChatRequestError) as exc:
        fail(str(exc))
    if len(set(names)) < len(names):
        fail(f"a model appears twice: {' '.join(names)}")
    system = item.system if item else args.system if args.system is not None else task.system_prompt if task else None
    messages = item.messages if item else [{"role": "user", "content": args.message[0]}]
    placed = workspace_placements(ws, len(names), NvmlInventory())
    err_console.print(f"asking {', '.join(names)} at once…", highlight=False)
    columns = answer_once(ws, names, placed, {"messages": messages, "system": system,
                                              "temperature": settings.temperature, "top_p": settings.top_p,
                                              "seed": settings.seed, "max_new_tokens": settings.max_new_tokens},
                          trust_remote_code=args.trust_remote_code)
    greedy = settings.temperature == 0
    results = [column_json(column, column.outcome(task, item, greedy), item is not None) for column in columns]
    if args.json:
        print_json(results)
    else:
        print_side_by_side(results, task is not None, item is not None)
    return 0 if any("error" not in result for result in results) else 1


def print_side_by_side(results: list[dict], with_task: bool, with_item: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=True, expand=True)
    for result in results:
        table.add_column(result["model"], ratio=1, overflow="fold")
    table.add_row(*(Text(r["error"], style="red") if "error" in r else Text(r["text"]) for r in results))
    stats = []
    for r in results:
        line = [f"first token {r['first_token_s']} s · {r['tokens_per_s']} tok/s · {r['tokens']} tokens"
                if r["tokens"] is not None else "no answer"]
        if with_task and r["tokens"] is not None:
            line.append(("no boxed answer" if r["extracted"] is None else f"answer {r['extracted']}")
                        + ("" if r.get("correct") is None else " ✓ right" if r["correct"] else " ✗ wrong"))
        if with_item:
            line.append("recorded: " + ("none" if r["recorded"] is None else
                                        "reproduced" if r["reproduces_recorded"] else
                                        f"DIFFERS (not reproducible): {r['recorded']}"
                                        if r["reproduces_recorded"] is False else str(r["recorded"])))
        stats.append(Text("\n".join(line), style="dim"))
    table.add_row(*stats)
    console.print(table)
