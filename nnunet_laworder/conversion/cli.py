"""``nnunet-laworder convert``: public datasets to nnU-Net raw datasets."""
from pathlib import Path


def _add_common(parser, default_name: str) -> None:
    parser.add_argument("src", type=Path, metavar="SRC", help="the dataset as downloaded (its top folder)")
    parser.add_argument("-d", "--dataset-id", type=int, required=True,
                        help="nnU-Net dataset id (1-999); output goes to $nnUNet_raw/DatasetXXX_NAME")
    parser.add_argument("--name", default=default_name, help=f"dataset name (default: {default_name})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def _add_2d(parser, default_name: str) -> None:
    _add_common(parser, default_name)
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--test-list", type=Path, metavar="FILE",
                       help="text file of case names (file stems), one per line: these go to imagesTs/labelsTs")
    split.add_argument("--test-only", action="store_true",
                       help="add every pair of SRC as the test split (imagesTs/labelsTs) of the existing dataset -d, "
                            "whose training cases stay as they are (none may be among them); give the --max-size "
                            "its training cases were converted with; --overwrite replaces an existing split")
    parser.add_argument("--max-size", type=int, metavar="N",
                        help="downscale so the longer side is at most N pixels (small CPU runs)")


def _add_test(args, pairs: list) -> int:
    from nnunet_laworder.conversion.common import add_test_split
    from nnunet_laworder.nnunet_folders import raw_dataset_folder
    add_test_split(pairs, raw_dataset_folder(args.dataset_id), args.max_size, source=args.src,
                   overwrite=args.overwrite)
    return 0


def _kvasir(args) -> int:
    from nnunet_laworder.conversion.kvasir import convert_kvasir_seg, kvasir_pairs
    if args.test_only:
        return _add_test(args, kvasir_pairs(args.src))
    convert_kvasir_seg(args.src, args.dataset_id, args.name, args.test_list, args.max_size, args.overwrite)
    return 0


def _cvc(args) -> int:
    from nnunet_laworder.conversion.cvc import convert_cvc_clinicdb, cvc_pairs
    if args.test_only:
        return _add_test(args, cvc_pairs(args.src))
    convert_cvc_clinicdb(args.src, args.dataset_id, args.name, args.test_list, args.max_size, args.overwrite)
    return 0


def _kits19(args) -> int:
    from nnunet_laworder.conversion.kits19 import convert_kits19
    convert_kits19(args.src, args.dataset_id, args.name, args.allow_missing_imaging, args.overwrite)
    return 0


def register(subparsers) -> None:
    """Add ``convert {kvasir-seg,cvc-clinicdb,kits19}``."""
    convert = subparsers.add_parser("convert", help="convert a public dataset into an nnU-Net raw dataset",
                                    description="Convert a public dataset into $nnUNet_raw/DatasetXXX_NAME. "
                                                "All input is checked before anything is written.")
    datasets = convert.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    kvasir = datasets.add_parser("kvasir-seg", help="Kvasir-SEG: SRC/images/*.jpg + SRC/masks/*.jpg|png")
    _add_2d(kvasir, "KvasirSEG")
    kvasir.set_defaults(func=_kvasir)

    cvc = datasets.add_parser("cvc-clinicdb",
                              help="CVC-ClinicDB: SRC/Original/*.tif + 'SRC/Ground Truth/*.tif' "
                                   "(or PNG/..., TIF/..., images/ + masks/)")
    _add_2d(cvc, "CVCClinicDB")
    cvc.set_defaults(func=_cvc)

    kits = datasets.add_parser("kits19", help="KiTS19: SRC/case_XXXXX/imaging.nii.gz + segmentation.nii.gz")
    _add_common(kits, "KiTS19")
    kits.add_argument("--allow-missing-imaging", action="store_true",
                      help="skip cases with a segmentation but no imaging (listed in conversion_report.json) "
                           "instead of failing")
    kits.set_defaults(func=_kits19)
