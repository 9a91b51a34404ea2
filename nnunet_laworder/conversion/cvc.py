"""CVC-ClinicDB (Bernal et al., 2015) to an nnU-Net raw dataset of RGB png images and 0/1 png polyp masks."""
from pathlib import Path
from typing import Optional

from nnunet_laworder.conversion.common import (DatasetTarget, convert_pairs, find_layout, pair_files,
                                               safe_case_id)

# the official TIFF release first, then the common re-distributions (Kaggle's PNG/ and TIF/, images/ + masks/)
LAYOUTS = (("Original", "Ground Truth"), ("PNG/Original", "PNG/Ground Truth"),
           ("TIF/Original", "TIF/Ground Truth"), ("images", "masks"))


def cvc_case_id(stem: str) -> str:
    """``cvc_0001`` for the numbered frames (sorts like the frame order), the safe stem otherwise."""
    return f"cvc_{int(stem):04d}" if stem.isdigit() else safe_case_id(stem)


def cvc_pairs(src: Path) -> list:
    """The image / mask pairs of ``src`` in any of the layouts (checked: every image has its mask)."""
    return pair_files(*find_layout(Path(src), LAYOUTS), case_id=cvc_case_id)


def convert_cvc_clinicdb(src: Path, dataset_id: int, name: str = "CVCClinicDB", test_list: Optional[Path] = None,
                         max_size: Optional[int] = None, overwrite: bool = False) -> Path:
    """Convert ``src/Original`` + ``src/Ground Truth`` (or a re-distribution); returns the dataset folder."""
    src = Path(src)
    target = DatasetTarget.resolve(dataset_id, name, overwrite)
    return convert_pairs(
        cvc_pairs(src), target, source=src, test_list=test_list, max_size=max_size,
        labels={"background": 0, "polyp": 1}, dataset_name=target.path.name,
        reference="Bernal et al., WM-DOVA maps for accurate polyp highlighting in colonoscopy, "
                  "Computerized Medical Imaging and Graphics 2015",
        license="CVC-ClinicDB terms: research use, cite the paper",
        converted_by="nnunet-laworder convert cvc-clinicdb")
