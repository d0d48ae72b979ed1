"""How good a model is, as numbers: metrics (AUROC), intervals (bootstrap and Wilson CIs, paired deltas, ROC
curves, histograms), screening (thresholds for a target sensitivity, flags, and the flag agreement of two runs: the
one place flag flips are counted), agreement (a cheaper precision against FP32: |dp| quantiles and flips),
comparison (verdicts worded from their intervals) and ensemble (joins fit on validation, localisation box by box).

May import xray.metadata and xray.tiles; never models (no torch here).
"""
