#!/usr/bin/env bash
# The project's test command: builds the server, runs the Rust tests, then the
# Python interop tests (pyarrow / ADBC / grpcurl) against the real binary.
#
#   bash scripts/test.sh
#
# Needs: Rust (cargo), Python 3.11+ (python3), network access to PyPI.
# Env: PYTHON (interpreter to create .venv with), PYTEST_ARGS (extra args),
#      PYTEST_TIMEOUT (seconds for the whole pytest run, default 1800).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
VENV="$ROOT/.venv"

log() { printf '\n==> %s\n' "$*"; }

summary() {
    printf '\ntest.sh summary: cargo build %s; cargo test %s; pytest %s; durable-streams conformance %s\n' \
        "$BUILD_RESULT" "$CARGO_TEST_RESULT" "$PYTEST_RESULT" "$CONFORMANCE_RESULT"
}
BUILD_RESULT="not run"; CARGO_TEST_RESULT="not run"; PYTEST_RESULT="not run"; CONFORMANCE_RESULT="not run"
trap 'echo "test.sh summary: setup failed at line $LINENO (exit $?)"' ERR

# Rust: rustup installs put cargo in ~/.cargo/bin, which a fresh shell may lack.
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

# ---- Python venv ------------------------------------------------------------
pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    for p in python3.11 python3 python; do
        if command -v "$p" >/dev/null 2>&1; then echo "$p"; return; fi
    done
    echo "no python3 found" >&2; return 1
}

make_venv() {
    local py; py="$(pick_python)"
    rm -rf "$VENV"
    if "$py" -m venv "$VENV" 2>/dev/null; then return; fi
    # Debian ships venv/ensurepip separately (python3-venv).
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        log "installing python3-venv (Debian)"
        rm -rf "$VENV"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        if "$py" -m venv "$VENV"; then return; fi
    fi
    log "python -m venv unavailable; trying virtualenv"
    rm -rf "$VENV"
    "$py" -m pip install -q --user virtualenv && "$py" -m virtualenv -q "$VENV"
}

log "Python environment ($VENV)"
if ! "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
    make_venv
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt

# ---- Node.js ------------------------------------------------------------------
# The Durable Streams conformance suite and the official JavaScript client
# (tests/js, run from pytest) need node and npm.
if ! command -v npx >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing Node.js and npm (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm || true
fi

# ---- Rust ---------------------------------------------------------------------
# A clean CI build never reuses incremental state; skipping it saves GiBs of disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
log "cargo build --bin streamdb"
if cargo build --bin streamdb; then
    BUILD_RESULT="ok"
else
    BUILD_RESULT="FAILED"; summary; exit 1
fi

log "cargo test --workspace"
status=0
if cargo test --workspace; then
    CARGO_TEST_RESULT="ok"
else
    CARGO_TEST_RESULT="FAILED"; status=1
fi

# ---- Python interop tests -----------------------------------------------------
log "pytest tests/python"
export STREAMDB_BIN="${STREAMDB_BIN:-${CARGO_TARGET_DIR:-target}/debug/streamdb}"
py_rc=0
# SIGINT first so pytest still prints its summary if the run hangs.
# shellcheck disable=SC2086
timeout -s INT -k 60 "${PYTEST_TIMEOUT:-1800}" \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python ${PYTEST_ARGS:-} || py_rc=$?
case "$py_rc" in
    0) PYTEST_RESULT="ok" ;;
    5) PYTEST_RESULT="FAILED (no tests collected)"; status=1 ;;
    124|130|137) PYTEST_RESULT="FAILED (timed out, exit $py_rc)"; status=1 ;;
    *) PYTEST_RESULT="FAILED (exit $py_rc)"; status=1 ;;
esac

# ---- Durable Streams conformance ---------------------------------------------
# The protocol's public suite (npm @durable-streams/server-conformance-tests)
# against a real server with the 500 ms long-poll timeout the suite expects.
log "Durable Streams conformance suite"
if ! command -v npx >/dev/null 2>&1; then
    CONFORMANCE_RESULT="FAILED (node/npx not installed)"; status=1
else
    ds_dir="$(mktemp -d)"
    ds_port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    "$STREAMDB_BIN" start --data-dir "$ds_dir/data" --port "$ds_port" --long-poll-timeout 500ms \
        >"$ds_dir/server.log" 2>&1 &
    ds_pid=$!
    "$VENV/bin/python" - "$ds_port" <<'PY' || true
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
PY
    ds_rc=0
    # The workspace's copy of the suite's runner when this checkout sits
    # beside it (../shared), else this repository's own runner of the same
    # suite and version (a clone elsewhere).
    suite=scripts/conformance.sh
    [ -f ../shared/conformance/durable-streams.sh ] && suite=../shared/conformance/durable-streams.sh
    log "running $suite"
    timeout -k 30 900 bash "$suite" "http://127.0.0.1:$ds_port" || ds_rc=$?
    kill -TERM "$ds_pid" 2>/dev/null || true
    wait "$ds_pid" 2>/dev/null || true
    if [ "$ds_rc" = 0 ]; then
        CONFORMANCE_RESULT="ok"
        rm -rf "$ds_dir"
    else
        CONFORMANCE_RESULT="FAILED (exit $ds_rc; server log in $ds_dir/server.log)"; status=1
        tail -n 40 "$ds_dir/server.log" || true
    fi
fi

summary
exit "$status"
