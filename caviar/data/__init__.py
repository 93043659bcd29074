"""Data: loading, train/dev/test splits, normalization, the mismatch check, augmentation."""

from .augment import Augmenter
from .loading import BUNDLED, Dataset, DataError, encode_labels, from_arrays, load, load_bundled, load_csv, load_npz, numeric_columns, read_csv
from .mismatch import MismatchReport, check_same_distribution
from .normalize import Normalizer
from .prepare import prepare
from .split import Split, split, split_indices, split_sizes

__all__ = ["Augmenter", "BUNDLED", "DataError", "Dataset", "MismatchReport", "Normalizer", "Split",
           "check_same_distribution", "encode_labels", "from_arrays", "load", "load_bundled", "load_csv",
           "load_npz", "numeric_columns", "prepare", "read_csv", "split", "split_indices", "split_sizes"]
