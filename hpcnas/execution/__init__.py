"""Execution: the MPI orchestrator, worker child processes, the evaluation history.

The dispatching processes (everything here but :mod:`worker`) never import
torch: training happens in a child process per rank that imports it lazily.
"""
