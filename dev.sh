#!/usr/bin/env bash
# llmtui's set-up and entry points. Usage:
#   ./dev.sh demo   set everything up, build the offline demo workspace, open the TUI on it
#   ./dev.sh test   set everything up and run the whole test suite
#   ./dev.sh setup  only set up the virtual environment (.venv)
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

case "${1:-}" in
    setup) setup ;;
    demo)
        setup
        WS=${2:-demo-workspace}
        [ -d "$WS/Models" ] || "$VENV/bin/llmtui" demo -w "$WS"
        exec "$VENV/bin/llmtui" -w "$WS"
        ;;
    test)
        setup
        shift
        export GPTQMODEL_CPU_WORKERS=${GPTQMODEL_CPU_WORKERS:-2}
        exec "$PY" -m pytest -q -p no:cacheprovider "$@"
        ;;
    *) sed -n '2,6p' "$0"; exit 2 ;;
esac
