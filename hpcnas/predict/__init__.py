"""Operational use of a trained network: sliding-window prediction on large scenes, export."""
