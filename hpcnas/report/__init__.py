"""Reports: plots (matplotlib), cell and network drawings (graphviz), a markdown summary."""
