"""Kvasir-SEG (Jha et al., MMM 2020) to an nnU-Net raw dataset of RGB png images and 0/1 png polyp masks."""
from pathlib import Path
from typing import Optional

from nnunet_laworder.conversion.common import DatasetTarget, convert_pairs, find_layout, pair_files

# the official zip unpacks to Kvasir-SEG/{images,masks}; accept the folder itself or its parent
LAYOUTS = (("images", "masks"), ("Kvasir-SEG/images", "Kvasir-SEG/masks"))


def kvasir_pairs(src: Path) -> list:
    """The image / mask pairs of ``src`` (checked: every image has its mask)."""
    return pair_files(*find_layout(Path(src), LAYOUTS))


def convert_kvasir_seg(src: Path, dataset_id: int, name: str = "KvasirSEG", test_list: Optional[Path] = None,
                       max_size: Optional[int] = None, overwrite: bool = False) -> Path:
    """Convert ``src/images/*.jpg`` + ``src/masks/*.jpg|png``; returns the dataset folder."""
    src = Path(src)
    target = DatasetTarget.resolve(dataset_id, name, overwrite)
    return convert_pairs(
        kvasir_pairs(src), target, source=src, test_list=test_list, max_size=max_size,
        labels={"background": 0, "polyp": 1}, dataset_name=target.path.name,
        reference="Jha et al., Kvasir-SEG: A Segmented Polyp Dataset, MMM 2020",
        license="Kvasir-SEG terms: research and educational use, cite the paper",
        converted_by="nnunet-laworder convert kvasir-seg")
