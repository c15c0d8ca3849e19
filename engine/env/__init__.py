"""Trading environments over the shared feature arrays: one env and the batched VecEnv."""
