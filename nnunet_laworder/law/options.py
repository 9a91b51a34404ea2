"""The LAW commands' choices and defaults, in a module without torch: the command line builds its parser (``--help``,
a mistyped option) without loading the engine, and the engine takes them from here."""

WEIGHTINGS = ("law", "prior", "uniform")  # --weighting: LAW, and its ablations on the same code path
INPAINT, WHOLE = "inpaint", "whole"  # --mode: lesion windows at the source's resolution, or whole images
MODES = (INPAINT, WHOLE)
# --protocol: move a case's own lesion inside its window (repainting the old place), or add another training case's
# lesion to it (its own lesions kept), harmonised from noise level --strength
MOVE, ADD = "move", "add"
PROTOCOLS = (MOVE, ADD)
SAMPLER_NAMES = ("ddim", "dpm")  # --sampler: DDIM, DPM-Solver++ (law/diffusion.py's SAMPLERS, in this order)
MIN_FIDELITY_DEFAULT = 0.5  # the quality gate's threshold, chosen from measurement: see README
MAX_DRAWS_DEFAULT = 8  # the gate's limit: samples drawn for one case before it is given up
EVALUATION_FOLDER = "law_evaluation"  # law evaluate's output, under $nnUNet_results/<dataset>
