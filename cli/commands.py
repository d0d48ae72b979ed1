"""The commands of `tilescope`: name -> the module that runs it (and a one-line description).

A target is a job module (its `main(argv)` runs) or `module:function` for the cluster commands that share a
module (status, logs, stop and list all live in jobs.runs). Only strings: the dispatcher (jobs/__main__.py) and
submit (jobs/submit.py) both read this table, and neither imports the other for it.
"""

from __future__ import annotations

JOBS = {
    "synth": ("jobs.synth", "write a deterministic synthetic archive in the NIH layout"),
    "train": ("jobs.train", "train one whole-image model on an archive's train split"),
    "quantize": ("jobs.quantize", "export a checkpoint to OpenVINO IR and quantize it to INT8"),
    "import": ("jobs.import_model", "bring your own model: weights, ONNX or OpenVINO IR -> an artifact"),
    "train-tiles": ("jobs.train_tiles", "train one model per tile position on Ray actors into an INT8 ensemble"),
    "score": ("jobs.score", "score an archive with an INT8 artifact on Ray Data into Parquet"),
    "report": ("jobs.report", "AUROC with CIs, deltas, screening thresholds and an HTML page for a scored run"),
    "demo": ("jobs.demo", "synth, train, INT8, score, a tile ensemble and a report, in a directory of its own"),
    "submit": ("jobs.submit", "submit a job to a Ray cluster; --resume RUN_ID resubmits a failed run"),
    "status": ("jobs.runs:status_main", "the status of a submitted run"),
    "logs": ("jobs.runs:logs_main", "a submitted run's logs; --follow streams them until it ends"),
    "stop": ("jobs.runs:stop_main", "stop a submitted run (tilescope submit --resume continues it)"),
    "list": ("jobs.runs:list_main", "every run submitted to the cluster"),
}


# Commands that act on a cluster rather than on data; every other entry of JOBS is listed as a job.
CLUSTER_MODULES = ("jobs.submit", "jobs.runs")
