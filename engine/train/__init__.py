"""Walk-forward training: folds, the hardware plan, units of work, the orchestrator."""
