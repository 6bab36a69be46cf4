"""Continuous search: the supernet training loop, the GAEA optimizer, decoding, checkpoints."""
