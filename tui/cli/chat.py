"""``llmtui chat MODEL``: talk to a model in the terminal (a quick check without the TUI). Runs in the
CLI process, which loads the model itself (:class:`engine.runs.chat.ChatSession`)."""

from __future__ import annotations

import sys

from tui.cli.common import add_workspace_arg, err_console, fail, workspace_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat", help="chat with a model in the terminal (streams the answer)",
        description="Load MODEL and answer each line you type, streaming the reply. The prompt is rendered by "
                    "the same prompt builder evaluation uses; --task takes that task's system prompt. Greedy "
                    "unless --temperature > 0. An empty line or end of input (ctrl+d) quits.")
    add_workspace_arg(parser)
    parser.add_argument("model", help="a model name in Models/ or a model folder")
    parser.add_argument("--task", help="take the system prompt of this task (arc, boolq, squad, openmath, or custom)")
    parser.add_argument("--system", help="a system prompt of your own (instead of --task's)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--show-prompt", action="store_true", help="print the rendered prompt before each answer")
    parser.add_argument("-m", "--message", action="append", default=[],
                        help="send this message (repeatable) instead of reading from the terminal")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from engine.data.tasks import DatasetError, get_task
    from engine.models.folder import ModelLoadError
    from engine.models.resolve import ModelNotFoundError, resolve_model_folder
    from engine.runs.chat import ChatRequestError, ChatSession, ChatSettings

    ws = workspace_from(args)
    system = args.system
    try:
        model_dir = resolve_model_folder(ws, args.model)
        if args.task and system is None:
            system = get_task(args.task, ws.datasets_dir).system_prompt
        settings = ChatSettings.from_request({"temperature": args.temperature, "top_p": args.top_p,
                                              "max_new_tokens": args.max_tokens})
    except (ModelNotFoundError, DatasetError, ChatRequestError) as exc:
        fail(str(exc))
    err_console.print(f"loading {model_dir.name}…", highlight=False)
    try:
        session = ChatSession(model_dir, device=args.device)
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
