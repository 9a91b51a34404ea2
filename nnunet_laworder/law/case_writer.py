"""One synthetic case written in the source dataset's own format, as nnU-Net will read it.

Images go back to the dataset's file format and pixel type: 2D png/bmp through PIL (RGB / grey, the source image's
bit depth); NIfTI / nrrd / mha through SimpleITK with the source case's spacing, origin and direction. Labels are
written with the dataset's nnU-Net reader/writer (``write_seg``), as real labels are read. A case of a slice-wise
3D generator is a volume of *one slice* with the source's spacing and direction and the origin of that slice.
"""
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from PIL import Image

from nnunet_laworder.errors import InputError

PIL_ENDINGS = (".png", ".bmp")
SITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".nhdr", ".mhd")


def image_dtype(path: str, ending: str) -> np.dtype:
    """The pixel type of a source image file (synthetic images are written with the same)."""
    if ending in PIL_ENDINGS:
        with Image.open(path) as image:
            return np.dtype(np.uint16) if image.mode.startswith("I;16") else \
                np.dtype(np.int32) if image.mode == "I" else np.dtype(np.uint8)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"{path}: {reader.GetNumberOfComponents()}-component pixels are not supported for "
                         f"synthesis (nnU-Net expects one channel per file)")
    return sitk.GetArrayFromImage(sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())).dtype


def cast(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rounded and clipped to an integer type's range; float types as they are."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    return image.astype(dtype)


def slice_origin(sitk_stuff: dict, slice_axis: int, index: int) -> list:
    """Physical position of voxel ``index`` along numpy axis ``slice_axis`` (sitk axes are reversed)."""
    dim = len(sitk_stuff["spacing"])
    voxel = np.zeros(dim)
    voxel[dim - 1 - slice_axis] = index
    direction = np.array(sitk_stuff["direction"], dtype=np.float64).reshape(dim, dim)
    origin = np.array(sitk_stuff["origin"]) + direction @ (voxel * np.array(sitk_stuff["spacing"]))
    return [float(v) for v in origin]


class CaseWriter:
    """Reads source labels and writes synthetic cases with the dataset's nnU-Net reader/writer and pixel types."""

    def __init__(self, ending: str, reader_writer: type, files_per_case: int, slice_axis: Optional[int]):
        self.ending = ending
        self.files_per_case = files_per_case
        self.slice_axis = slice_axis
        self.io = reader_writer()

    @classmethod
    def for_dataset(cls, dataset_json: dict, first_case: dict, dataset: str,
                    slice_axis: Optional[int]) -> "CaseWriter":
        """The writer of ``dataset`` (its dataset.json and one case's files), or an :class:`InputError` when its
        format cannot be written as nnU-Net reads it."""
        ending = dataset_json["file_ending"]
        if ending not in PIL_ENDINGS + SITK_ENDINGS:
            raise InputError(f"file ending {ending} is not supported for synthesis (supported: "
                             f"{', '.join(PIL_ENDINGS + SITK_ENDINGS)})")
        reader_writer = determine_reader_writer_from_dataset_json(dataset_json, first_case["images"][0],
                                                                  verbose=False)
        expected = "NaturalImage2DIO" if ending in PIL_ENDINGS else "SimpleITKIO"
        if reader_writer.__name__ != expected:
            raise InputError(f"{dataset} is read with {reader_writer.__name__}; synthesis writes {ending} files as "
                             f"{expected} reads them")
        channels = len(dataset_json["channel_names"])
        files_per_case = len(first_case["images"])
        if channels % files_per_case or (ending in SITK_ENDINGS and files_per_case != channels):
            raise InputError(f"{dataset}: {files_per_case} image files per case for {channels} channels")
        return cls(ending, reader_writer, files_per_case, slice_axis)

    def read_seg(self, path: str):
        """(segmentation ``(1, *spatial)``, properties) of a source label, as nnU-Net reads it."""
        return self.io.read_seg(path)

    def write(self, folder: Path, case: str, image: np.ndarray, label: np.ndarray, source_images: Sequence[str],
              properties: dict, source_slice: Optional[int]) -> None:
        """``folder/imagesTr/CASE_000k`` and ``folder/labelsTr/CASE``: ``image (C, *spatial)`` split into the files
        the source case has, each in its pixel type, and ``label (*spatial)``."""
        properties = self._slice_properties(properties, source_slice)
        (folder / "imagesTr").mkdir(parents=True)
        (folder / "labelsTr").mkdir()
        per_file = image.shape[0] // self.files_per_case
        for k, source_file in enumerate(source_images):
            channels = cast(image[k * per_file:(k + 1) * per_file], image_dtype(source_file, self.ending))
            path = folder / "imagesTr" / f"{case}_{k:04d}{self.ending}"
            if self.ending in PIL_ENDINGS:
                pixels = channels[:, 0]  # (c, H, W)
                pixels = pixels[0] if per_file == 1 else np.moveaxis(pixels, 0, -1)
                Image.fromarray(np.ascontiguousarray(pixels)).save(path)
            else:
                stuff = properties["sitk_stuff"]
                volume = channels[0]
                if len(stuff["spacing"]) == 2:
                    volume = volume[0]
                itk = sitk.GetImageFromArray(volume)
                itk.SetSpacing(stuff["spacing"])
                itk.SetOrigin(stuff["origin"])
                itk.SetDirection(stuff["direction"])
                sitk.WriteImage(itk, str(path), True)
        self.io.write_seg(label.astype(np.uint8 if label.max() < 255 else np.uint16),
                          str(folder / "labelsTr" / f"{case}{self.ending}"), properties)

    def _slice_properties(self, properties: dict, source_slice: Optional[int]) -> dict:
        """The source's properties, with the origin of the source slice for a one-slice volume."""
        if source_slice is None or "sitk_stuff" not in properties:
            return properties
        properties = dict(properties, sitk_stuff=dict(properties["sitk_stuff"]))
        properties["sitk_stuff"]["origin"] = slice_origin(properties["sitk_stuff"], self.slice_axis, source_slice)
        return properties
