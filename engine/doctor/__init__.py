"""``llmtui doctor``'s report (CLI process; any process may call it), one module per area of checks: what works on this machine, without torch.

Each check gives a :class:`Check`: ``ok``, ``warning``, ``error`` or ``skipped`` (not applicable here),
a one-line detail and a one-line fix. Package versions come from installed metadata and torch's CUDA
build from ``torch/version.py`` read as text, so the report imports no ML library; the GPUs and the
driver come from the queue's :class:`engine.jobs.gpu.GpuInventory`. Facts only torch can tell
(``torch.cuda``, native bf16, the library bitsandbytes loads) come from a short child process,
``python -m engine.runs.cuda_probe``, started only when NVML lists a GPU. The smoke run that trains,
quantizes and evaluates for real is ``engine.runs.smoke``; it reports with the same :class:`Check`.
"""
