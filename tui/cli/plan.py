"""``llmtui plan``: validate a preset and show the resolved config, output name and steps (CLI process)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from engine.presets.requests import TrainRequest
from tui.cli.common import add_workspace_arg, console, err_console, load_preset_or_exit, print_json, workspace_from
from tui.format import human_duration


def register(subparsers) -> None:
    parser = subparsers.add_parser("plan", help="validate a preset and show what it would run")
    add_workspace_arg(parser)
    TrainRequest.add_flags(parser, overwrite=False)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    from engine.jobs.settings import configured_vllm_python
    from engine.models.estimate import EstimateError, plan_estimates
    from engine.presets.plan import make_plan, model_preview

    ws = workspace_from(args, must_exist=False)
    config = load_preset_or_exit(ws, args.preset, args.overrides, json_errors=args.json)
    plan = make_plan(config, ws)
    model = model_preview(config, ws)
    try:
        estimates = plan_estimates(config, ws, plan.steps, vllm=configured_vllm_python(ws) is not None)
    except EstimateError as exc:
        estimates = {"available": False, "reason": str(exc)}
    if args.json:
        print_json({"valid": True, "config": config.to_dict(), **plan.to_dict(), "model": model,
                    "estimates": estimates})
        return 0
    console.print(f"[bold]output[/]  {plan.output_name}\n[bold]folder[/]  {plan.output_dir}")
    _print_model(model)
    for key, entry in (plan.training or {}).items():
        console.print(f"[bold]{key}[/]  {str(entry['value']).lower()}: {entry['plan']}", highlight=False)
    steps = Table("#", "step", "target", "what", "after", title="steps", title_justify="left")
    for i, step in enumerate(plan.steps):
        steps.add_row(str(i), step.kind, Text(step.target), Text(step.description), ",".join(map(str, step.after)))
    console.print(steps)
    _print_estimates(estimates)
    console.print("[bold]resolved config[/]")
    console.print(config.to_toml(), markup=False, highlight=False)
    if plan.output_dir and (ws.models_dir / plan.output_name).exists():
        err_console.print(f"[yellow]note:[/] Models/{plan.output_name} exists; training would need --overwrite")
    return 0


def _print_model(model: dict) -> None:
    """Target modules and prompt format as the base model's files give them (or when they are resolved)."""
    targets = model["target_modules"]
    if targets is not None:
        resolved = targets["resolved"]
        shown = ", ".join(resolved) if isinstance(resolved, list) else resolved
        arch = f" ({targets['model_type']})" if targets["model_type"] else ""
        console.print(f"[bold]target modules[/]  {', '.join(targets['requested'])} → {shown}{arch}", highlight=False)
    prompt_format = model["prompt_format"]
    if isinstance(prompt_format, dict):
        fields = ", ".join(f"{k}={v}" for k, v in prompt_format.items() if k not in ("example", "chat_template_sha256"))
        template = prompt_format["chat_template_sha256"]
        console.print("[bold]prompt format[/]  ", end="")
        console.print(f"template {template[:12]}, {fields}", highlight=False, markup=False)
    else:
        console.print(f"[bold]prompt format[/]  {prompt_format}", highlight=False)


def _print_estimates(estimates: dict) -> None:
    """Peak memory per step on a GPU and on the CPU (from the base's config.json), and a time where known."""
    if not estimates["available"]:
        console.print(f"[bold]memory[/]  no estimate: {estimates['reason']}", highlight=False)
        return
    table = Table("#", "step", "GPU GB", "CPU GB", "time", "what the GPU figure assumes",
                  title=f"memory estimate ({estimates['parameters'] / 1e9:.2f} B parameters, {estimates['config']})",
                  title_justify="left")
    for row in estimates["steps"]:
        times = ", ".join(f"{device} ~{human_duration(s)}" for device, s in row["time_s"].items()) or "—"
        table.add_row(str(row["index"]), row["kind"], f"{row['memory_gb']['gpu']:.1f}",
                      f"{row['memory_gb']['cpu']:.1f}", times, row["note"])
    console.print(table)
