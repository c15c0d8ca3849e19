"""Run folders: layout, the event log and its one reader, run views, detached jobs."""
