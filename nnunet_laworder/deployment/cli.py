"""``nnunet-laworder export | predict --onnx``: a trained model outside PyTorch."""
import json


def register(subparsers) -> None:
    register_export(subparsers)
    register_predict(subparsers)


def add_model_arguments(parser) -> None:
    """The model as nnUNetv2_predict names it."""
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-c", required=True, help="configuration, e.g. 2d_order")
    parser.add_argument("-tr", required=True, help="trainer, e.g. nnUNetTrainerORDER")
    parser.add_argument("-f", required=True, help="fold (a number or 'all')")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")


def trained_fold(args, checkpoint=None):
    from nnunet_laworder.deployment.trained_model import TrainedFold
    from nnunet_laworder.nnunet_folders import DEFAULT_CHECKPOINT, parse_fold

    return TrainedFold(dataset=args.d, configuration=args.c, trainer=args.tr, fold=parse_fold(args.f),
                       plans=args.p, checkpoint=checkpoint or DEFAULT_CHECKPOINT)


def register_export(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a trained fold's network to ONNX (dynamic batch and spatial axes)",
        description="Loads the fold's network as nnUNetv2_predict does (no deep supervision, eval mode) and "
                    "writes it as an ONNX graph that onnxruntime runs, with the model it came from in its "
                    "metadata. Prints that metadata and the largest logit difference onnxruntime - PyTorch on a "
                    "random patch.")
    add_model_arguments(parser)
    parser.add_argument("-o", required=True, metavar="FILE.onnx", help="the ONNX file to write")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file name (default checkpoint_final.pth)")
    parser.set_defaults(func=run_export)


def run_export(args) -> int:
    from nnunet_laworder.deployment.onnx_export import export_onnx  # torch and nnU-Net load slowly

    print(json.dumps(export_onnx(trained_fold(args, args.checkpoint), args.o), indent=2))
    return 0


def register_predict(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="nnU-Net's prediction with the network computed by onnxruntime (--onnx)",
        description="nnUNetv2_predict's pipeline (preprocessing, sliding window, mirroring, export) for one "
                    "trained fold, with its network replaced by the ONNX graph that `nnunet-laworder export` "
                    "wrote from it, run by onnxruntime on the CPU.")
    parser.add_argument("--onnx", required=True, metavar="FILE.onnx", help="the graph `export` wrote")
    parser.add_argument("-i", required=True, help="input folder (nnU-Net's file naming, _0000 ...)")
    parser.add_argument("-o", required=True, help="output folder")
    add_model_arguments(parser)
    parser.add_argument("-step_size", type=float, default=0.5, help="sliding-window step (default 0.5)")
    parser.add_argument("--disable_tta", action="store_true", help="no mirroring at test time")
    parser.add_argument("--save_probabilities", action="store_true", help="also write the probabilities")
    parser.add_argument("-npp", type=int, default=3, help="preprocessing processes (default 3)")
    parser.add_argument("-nps", type=int, default=3, help="segmentation export processes (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    parser.add_argument("-device", default="cpu", choices=("cpu",),
                        help="cpu: onnxruntime runs on the CPU provider (default)")
    parser.set_defaults(func=run_predict)


def run_predict(args) -> int:
    from nnunet_laworder.deployment.onnx_predict import predict_onnx

    predict_onnx(args.onnx, args.i, args.o, trained_fold(args), use_mirroring=not args.disable_tta,
                 save_probabilities=args.save_probabilities, tile_step_size=args.step_size, threads=args.threads,
                 processes_preprocessing=args.npp, processes_export=args.nps)
    return 0
