"""The job queue (TUI, CLI and worker processes; never imports torch): store, scheduler, worker, process control."""
