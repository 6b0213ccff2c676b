"""The job queue (TUI, CLI and worker processes; never imports torch): the store, the job folder and statuses,
worker.toml, the worker loop, the control front door, scheduling, the Slurm executor, process control."""
