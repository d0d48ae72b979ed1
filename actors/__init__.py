"""The classes Ray runs as actors, written as plain classes (Int8Scorer, EnsembleScorer, TileTrainer) and made
remote where a job launches them; openvino_ir holds the OpenVINO and NNCF plumbing they and the jobs share.

May import storage and xray; never cli or jobs.
"""
