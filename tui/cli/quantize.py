"""``llmtui quantize MODEL_DIR --method …``: PTQ into a new folder in Models/ (CLI or job process)."""

from __future__ import annotations

import signal
from typing import Any

from rich.markup import escape

from engine.jobs.process import stdout_to_stderr
from engine.presets.requests import QuantizeRequest
from tui.cli.common import add_workspace_arg, console, fail, print_json, workspace_from
from tui.format import human_duration, human_size


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantize", help="post-training quantization (GPTQ, AWQ, HQQ, INT8, NF4) of a model folder",
        description="Quantize a full-precision model folder (or an adapter, merged into its base first) into "
                    "Models/{source}_{tag}/ with quantization_metadata.json. The source's training_metadata.json "
                    "is carried over.")
    add_workspace_arg(parser)
    parser.add_argument("model", metavar="MODEL_DIR", help="model folder, or a model name in Models/")
    QuantizeRequest.add_flags(parser)
    parser.add_argument("--out", metavar="NAME", default=None,
                        help="output folder name in Models/ (default: the source name with the PTQ tag)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--device", metavar="DEV", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--events", metavar="FILE", default=None,
                        help="append JSONL progress events here (default: $LLMTUI_EVENTS)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (a cancelled job) unwinds like Ctrl-C, so the temp output folder is removed."""
    raise KeyboardInterrupt


def run(args) -> int:
    from engine.events import EventWriter, events_path_from_env
    from engine.runs.quantize import QuantizeError, quantize_model

    ws = workspace_from(args)
    request = QuantizeRequest.from_flags(args)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with EventWriter(args.events or events_path_from_env()) as events, stdout_to_stderr():
            result = quantize_model(ws, args.model, request.method, request.bits or None, request.group_size,
                                    request.calibration or None, request.samples, args.out, events,
                                    overwrite=args.overwrite, device=args.device)
    except QuantizeError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        fail("quantization interrupted: no model was saved", 130)
    if args.json:
        print_json(result)
        return 0
    meta = result["metadata"]
    calibration = meta.get("calibration")
    used = f", calibrated on {calibration['samples']} samples of {calibration['source']}" if calibration else ""
    console.print(f"[bold green]saved[/] {escape(result['output_dir'])} ({result['quant_tag']}, "
                  f"{meta['backend']} {meta['backend_version']}{escape(used)}): "
                  f"{human_size(result['size_before_bytes'])} → {human_size(result['size_after_bytes'])} "
                  f"in {human_duration(result['duration_s'])}", highlight=False)
    return 0
