"""Cluster layer: turning a command into SLURM jobs (submitit); the hand-editable
equivalents are the sbatch scripts in ``slurm/``."""
