"""Entry points that `ray job submit` runs: sweep, ensemble, targets, downstream."""
