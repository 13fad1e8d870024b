"""Data sets as uint8 tensors: named sets (digits, MNIST, Fashion-MNIST, CIFAR-10/100) and image folders.

``load_dataset(name, split)`` returns an :class:`ImageSet`; ``augment`` holds the on-device batch
augmentation the training engine uses; ``images.load_image`` prepares a single file as training did.
"""

from __future__ import annotations

from .arrays import pixel_stats
from .base import ImageSet, cache_dir, data_root
from .datasets import DATASETS, DatasetInfo, canonical_name, dataset_info, list_datasets, load_dataset
from .folder import load_folder
from .idx import parse_idx, read_idx
from .images import RESIZE_POLICY, decode_file, load_image

__all__ = [
    "DATASETS", "DatasetInfo", "ImageSet", "RESIZE_POLICY", "cache_dir", "canonical_name", "data_root",
    "dataset_info", "decode_file", "list_datasets", "load_dataset", "load_folder", "load_image", "parse_idx",
    "pixel_stats", "read_idx",
]
