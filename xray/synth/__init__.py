"""Synthetic archives that stand in for NIH ChestX-ray14: images (chest-like pictures with learnable, localised
findings and their case records), detail (small findings drawn at full resolution), nih_files (the NIH metadata files
of a synthetic archive) and fractal (IFS fractals, calibration images with no patient in them).

May import xray.codec and xray.metadata.
"""
