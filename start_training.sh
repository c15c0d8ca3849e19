#!/usr/bin/env bash
# Start training with sanitized BLAS/OpenMP thread pools (one thread each): hundreds of workers
# times a pool per host core is how the old code hit "pthread_create failed".
# The variables come from the engine's one thread helper, so this script, the CLI and the panel
# agree. Uses the project's .venv when there is one, else `ploutos` on PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ploutos="ploutos"
if [ -x "$here/.venv/bin/ploutos" ]; then ploutos="$here/.venv/bin/ploutos"; fi
eval "$("$ploutos" threads --shell)"
exec "$ploutos" train "$@"
