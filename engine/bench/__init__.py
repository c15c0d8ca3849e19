"""Benchmarks (`ploutos bench ...`), one module each; JSON out."""
