"""Data layer: the HDF5 patch format, its readers, tiling and synthetic data.

Nothing here imports torch at module level except :mod:`hpcnas.data.torch_dataset`.
"""
