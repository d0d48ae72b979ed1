"""The models and their training math (torch lives here): registry (the backbones, one input contract),
weights (state dicts as people save them -> tilescope's key names), outputs (a foreign model's outputs -> tilescope's
label columns), training (the epoch step shared by whole-image and tile trainers), precision and cpu_isa (which
math path a CPU takes), and cam (class activation maps of a whole-image model).

May import xray.metadata and xray.evaluation.
"""
