"""The report page's drawing: svg (primitives and the palette), plots (charts: AUROC per label, ROC curves, score
histograms), overlays (heatmaps over X-rays and their colour bar) and html (the self-contained page); no
JavaScript, fonts or network. Gets numbers, draws them: computes no statistic.

Imports nothing else from tilescope.
"""
