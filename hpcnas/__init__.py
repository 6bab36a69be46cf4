"""hpcnas: neural architecture search for semantic segmentation on SLURM GPU clusters.

Importing this package never imports torch: the MPI dispatcher and the command
line must run without it (torch is imported lazily where a network is built).
"""

__version__ = "0.1.0"
