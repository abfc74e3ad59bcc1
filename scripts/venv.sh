# Sourced by scripts/*: create or reuse $ROOT/.venv and install distlog (editable) with test extras.
# Reinstalls only when setup.cfg changed since the last install, so a warm run starts at once.
VENV="${DISTLOG_VENV:-$ROOT/.venv}"

ensure_venv() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[distlog] creating $VENV" >&2
    python3 -m venv "$VENV" || { echo "[distlog] python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
  fi
  local stamp="$VENV/.distlog-installed"
  if [[ ! -f "$stamp" || "$ROOT/setup.cfg" -nt "$stamp" || "$ROOT/pyproject.toml" -nt "$stamp" ]]; then
    echo "[distlog] installing distlog and its test extras into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test]" >&2
    touch "$stamp"
  fi
}
