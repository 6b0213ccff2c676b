"""Experiment trackers (TensorBoard, W&B, MLflow, Trackio) for training and evaluation; job processes.

Training passes ``[train] report_to`` to the trainer (transformers' own integrations, which read their
usual environment variables: ``WANDB_MODE``/``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``/
``MLFLOW_EXPERIMENT_NAME``…); nothing is reported unless the preset names a tracker. The identities of
the runs the trainer opened are recorded (:func:`identity_callback`) in ``training_metadata.json`` under
``trackers`` so that a resumed attempt continues the same tracker run and an evaluation can log its
metrics to it (:func:`log_evaluation`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Callable

from engine.staging import TENSORBOARD_DIR

#: tracker → (module the trainer's integration imports, what to install)
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "pip install tensorboard"),
                    "wandb": ("wandb", "pip install wandb"),
                    "mlflow": ("mlflow", "pip install mlflow-skinny  (or the full mlflow)"),
                    "trackio": ("trackio", "pip install trackio")}
#: Where evaluation metrics go inside a model's TensorBoard folder.
EVAL_TENSORBOARD_RUN = "eval"


def chosen(report_to: list[str]) -> list[str]:
    """The trackers named in a ``report_to`` list ('none' removed)."""
    return [name for name in report_to if name != "none"]


def missing_packages(report_to: list[str], where: str = "train.report_to") -> str | None:
    """One message naming every tracker whose package is not installed, with the install hint; None if all are."""
    missing = [name for name in chosen(report_to) if importlib.util.find_spec(TRACKER_PACKAGES[name][0]) is None]
    if not missing:
        return None
    hints = "; ".join(f"{name}: {TRACKER_PACKAGES[name][1]}" for name in missing)
    return (f"{where} = {list(report_to)}: the package for {', '.join(missing)} is not installed ({hints}), "
            f"or remove it from {where}")


def continue_runs(recorded: dict[str, Any]) -> None:
    """Before a resumed attempt: make the trainer's integrations reopen the runs the first attempt opened
    (unless the user's environment already names a run)."""
    mlflow = recorded.get("mlflow") or {}
    if mlflow.get("run_id"):
        os.environ.setdefault("MLFLOW_RUN_ID", str(mlflow["run_id"]))
    wandb = recorded.get("wandb") or {}
    if wandb.get("id"):
        os.environ.setdefault("WANDB_RUN_ID", str(wandb["id"]))
        os.environ.setdefault("WANDB_RESUME", "allow")


def identity_callback(report_to: list[str], record: Callable[[dict[str, Any]], None]) -> Any:
    """A ``TrainerCallback`` that hands ``record`` the identities of the tracker runs once training began
    (the integrations open them in their own ``on_train_begin``, which runs before this one)."""
    from transformers import TrainerCallback

    names = chosen(report_to)

    class TrackerIdentities(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                record(current_identities(names, Path(args.output_dir)))

    return TrackerIdentities()


def current_identities(names: list[str], output_dir: Path) -> dict[str, Any]:
    """The open tracker runs of this process, as plain data."""
    found: dict[str, Any] = {}
    if "tensorboard" in names:
        found["tensorboard"] = {"log_dir": TENSORBOARD_DIR}  # relative to the model folder
    if "mlflow" in names:
        import mlflow

        run = mlflow.active_run()
        if run is not None:
            found["mlflow"] = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                               "tracking_uri": mlflow.get_tracking_uri()}
    if "wandb" in names:
        import wandb

        if wandb.run is not None:
            found["wandb"] = {"id": wandb.run.id, "project": wandb.run.project, "entity": wandb.run.entity}
    if "trackio" in names:
        found["trackio"] = {"project": os.environ.get("TRACKIO_PROJECT_NAME", "huggingface")}
    return found


def log_evaluation(model_dir: Path, trackers: dict[str, Any], wanted: list[str], metrics: dict[str, Any],
                   step: int | None) -> list[str]:
    """Log an evaluation's accuracies to the tracker runs the model's training used (of those ``wanted``).

    Returns one line per tracker saying what was done (or why not).
    """
    values = {"eval/overall_accuracy": metrics["summary"].get("overall_accuracy")}
    for dataset, block in metrics.get("datasets", {}).items():
        values[f"eval/{Path(dataset).stem}/accuracy"] = block.get("accuracy")
    values = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
    said = []
    for name in chosen(wanted):
        identity = trackers.get(name)
        if not identity:
            said.append(f"{name}: the model's training did not report to {name}; nothing logged")
            continue
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            folder = model_dir / identity["log_dir"] / EVAL_TENSORBOARD_RUN
            with SummaryWriter(log_dir=str(folder)) as writer:
                for key, value in values.items():
                    writer.add_scalar(key, value, global_step=step or 0)
            said.append(f"tensorboard: {len(values)} scalar(s) in {folder}")
        elif name == "mlflow":
            import mlflow

            mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or identity["tracking_uri"])
            with mlflow.start_run(run_id=identity["run_id"]):
                mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()}, step=step or 0)
            said.append(f"mlflow: {len(values)} metric(s) in run {identity['run_id']}")
        elif name == "wandb":
            import wandb

            run = wandb.init(id=identity["id"], project=identity.get("project"), entity=identity.get("entity"),
                             resume="allow")
            run.log(values)
            run.finish()
            said.append(f"wandb: {len(values)} metric(s) in run {identity['id']}")
        else:
            said.append(f"{name}: logging evaluations to {name} is not supported; nothing logged")
    return said
