"""Tile ensembles' geometry and joins: grid (a square image cut into positions and stitched back), join
(per-position probabilities -> image probabilities, thresholds and heatmaps, by max, mean, noisy-OR or learned
weights) and schedule (which position a free trainer actor takes next).

Imports nothing else from tilescope (xray/metadata and xray/evaluation build on it).
"""
