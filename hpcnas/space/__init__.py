"""Search spaces: op sets, mixed ops, cells, networks (torch) and genotypes (no torch)."""
