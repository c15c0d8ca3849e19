"""Market data sources: Alpaca (hourly bars) and Yahoo (daily macro series)."""
