"""The pure core of tilescope: decoding, synthetic data, tiles, metadata, models, evaluation and the report's
drawing. No Ray, no boto3, no OpenVINO, no pyarrow.fs: everything here runs on numpy (and torch in models/) and is
tested without a cluster. Never imports jobs/, cli/, actors/ or storage/.

Sub-packages, bottom floor first (tests/unit/test_import_graph.py holds the order):
  codec/        PNG and JPEG bytes -> 8-bit grey pixels, and the PNG writer of synth
  tiles/        tile grid geometry, the joins of per-position outputs, which position a trainer takes next
  metadata/     the 14 labels, NIH's metadata files, patient splits, ground truth, artifact manifests
  evaluation/   AUROC and its intervals, screening thresholds and flags, agreement, comparisons, ensembles
  models/       the backbone registry, weights, the training step, precision and CPU class, CAM
  synth/        the synthetic archive: chest-like images, fine findings, NIH files, fractals
  calibration/  which images calibrate INT8 quantization, and which sources are known to hurt which backbone
  report/       the report page's plots (inline SVG) and HTML
"""
