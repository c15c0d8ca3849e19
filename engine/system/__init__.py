"""Machine facts and process set-up: thread pools, limits, GPUs, process start-up."""
