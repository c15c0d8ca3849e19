"""Market data: the Parquet store, sources, calendar, checks, macro alignment, builds."""
