"""What the panel reads: run folders and the machine, as immutable snapshots (no Textual, no actions)."""
