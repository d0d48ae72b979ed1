"""Calibrating INT8 quantization: sets (which images calibrate a model: the archive's, synthetic or fractal)
and risks (which calibration source bench.calibration measured to hurt which backbone; the figures ship as
calibration_risks.json).

May import xray.codec, xray.synth and xray.metadata.
"""
