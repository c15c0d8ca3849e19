"""Where units run: the local forkserver workers or a Ray cluster."""
