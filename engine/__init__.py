"""Ploutos engine: data, features, environments, training and runs. Importable without any UI."""

__version__ = "0.1.0"
