"""The report page's drawing: plots (inline SVG and PNG heatmap overlays, no JavaScript, fonts or network) and
html (the self-contained page). Gets numbers, draws them: computes no statistic.

Imports nothing else from tilescope.
"""
