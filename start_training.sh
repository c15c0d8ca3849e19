#!/usr/bin/env bash
# Start training with sanitized BLAS/OpenMP thread pools (one thread each): hundreds of workers
# times a pool per host core is how the old code hit "pthread_create failed".
# The variables come from the engine's one thread helper, so this script, the CLI and the panel agree.
set -euo pipefail
eval "$(ploutos threads --shell)"
exec ploutos train "$@"
