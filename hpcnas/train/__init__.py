"""Training and evaluation of discrete networks, metrics and baselines."""
