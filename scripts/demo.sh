#!/usr/bin/env bash
# The main job: build lockerd and show it running on its embedded defaults.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
bash scripts/setup.sh
cargo build --release --locked 2>&1 | tail -n 1
DEMO_DIR="${LOCKERD_DEMO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lockerd/demo}"
mkdir -p "$DEMO_DIR"
LOG="$DEMO_DIR/daemon.log"
L=("$LOCKERD_BIN" --demo --db "$DEMO_DIR/lockerd.db" --models "$LOCKERD_MODELS")

echo "== starting lockerd (demo mode: generated key at $DEMO_DIR/lockerd.db.key)"
"${L[@]}" run 2>"$LOG" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "ready:" "$LOG" && break
    kill -0 "$pid" 2>/dev/null || { cat "$LOG"; echo "lockerd exited early"; exit 1; }
    sleep 0.1
done
grep -q "ready:" "$LOG" || { cat "$LOG"; echo "lockerd did not become ready"; exit 1; }
sed 's/^/   daemon | /' "$LOG"
echo "== store check while it runs"
"${L[@]}" store check | sed 's/^/   /'
echo "== stopping with SIGTERM"
kill -TERM "$pid"; wait "$pid"; trap - EXIT
tail -n 2 "$LOG" | sed 's/^/   daemon | /'
echo "== audit log (last rows) and chain check"
"${L[@]}" audit list --limit 4 | sed 's/^/   /'
"${L[@]}" audit verify | sed 's/^/   /'
