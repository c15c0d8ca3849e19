"""Out-of-sample evaluation of an ensemble and its Monte Carlo statistics."""
