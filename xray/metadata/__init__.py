"""What is known about images and artifacts, as typed values: labels (the 14 findings in CheXNet order and
their Parquet columns), nih (parsers of Data_Entry_2017.csv, the split lists and BBox_List_2017.csv), splits (every
patient split: train / val / test, the report's Split names and a model's own ModelSplit), ground_truth (labels and
splits joined to scored images) and manifests (the typed, versioned manifests of checkpoints, models and ensembles).

May import xray.tiles (an ensemble manifest names its grid and join); never codec, models or evaluation.
"""
