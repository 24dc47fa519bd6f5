# Sourced by the other scripts: make (or reuse) the project's virtualenv.
# Needs only python3 (>= 3.11) on PATH; everything else is installed here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HOTPLUMB_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.installed-$(cksum < "$ROOT/pyproject.toml" | cut -d' ' -f1)-$1"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$1]"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
