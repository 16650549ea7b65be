# Sourced by the other scripts: where things are.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LOCKERD_MODELS="${LOCKERD_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/lockerd/models}"
export LOCKERD_DATA="${LOCKERD_DATA:-$REPO/../shared/data}"
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
LOCKERD_BIN="$REPO/target/release/lockerd"
# The developers' lab (eval, replay, simulate, tools, bench, lock-sim): never packaged.
LAB_BIN="$REPO/target/release/lockerd-lab"
export LOCKERD_DEMO_ASSETS="${LOCKERD_DEMO_ASSETS:-${XDG_CACHE_HOME:-$HOME/.cache}/lockerd/demo-assets}"
