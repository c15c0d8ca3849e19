"""Features computed once per dataset: indicators, the feature set, its cache."""
