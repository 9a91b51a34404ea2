"""Synthetic cases drawn with a probability: each training sample is a synthetic case (``law synthesize``) with
probability p and a real training case otherwise, so that the real cases keep their weight however many synthetic
cases the dataset holds (DiffTumor, CVPR 2024, draws its synthetic tumours with p = 0.5).

nnU-Net 2.8's get_dataloaders makes its data loader with ``sampling_probabilities=None`` and starts the augmentation
workers before a trainer could set them, so the draw happens where the loader loads a case: :class:`SyntheticMix`
shows the loader the real cases only, and replaces the one it drew by a synthetic case with probability p. (The
batch's ``keys``, which nnU-Net's training never reads, then name the real case that was replaced.)
"""
from typing import Sequence

import numpy as np

from nnunet_laworder.law.provenance import read_provenance
from nnunet_laworder.nnunet_folders import raw_dataset_folder


def synthetic_cases(dataset_name: str) -> set:
    """The synthetic cases that the raw dataset's provenance.json lists, or an InputError naming the file."""
    return set(read_provenance(raw_dataset_folder(dataset_name)).cases)


class SyntheticMix:
    """nnU-Net's training dataset as its data loader uses it (``identifiers``, ``load_case``): the loader draws among
    the real cases; with probability ``probability`` a synthetic case (uniformly among them) takes the drawn one's
    place."""

    def __init__(self, dataset, synthetic: Sequence[str], probability: float):
        self.dataset = dataset
        self.synthetic = sorted(synthetic)
        self.identifiers = [case for case in dataset.identifiers if case not in set(synthetic)]
        self.probability = probability

    def load_case(self, identifier: str):
        # p = 0 draws no random number: the real cases alone, as nnU-Net would draw them
        if self.probability > 0 and np.random.uniform() < self.probability:
            identifier = self.synthetic[np.random.randint(len(self.synthetic))]
        return self.dataset.load_case(identifier)
