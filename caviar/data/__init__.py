"""Data: reading tables and arrays, column roles, preprocessing fitted on training rows,
train/dev/test splits, normalization, the mismatch check, augmentation."""

from .augment import Augmenter
from .columns import Column, format_roles, infer_roles, target_of
from .loading import BUNDLED, Dataset, DataError, encode_labels, from_arrays, load, load_bundled, load_npz, load_table
from .preprocess import Preprocessor
from .table import read_table
from .mismatch import MismatchReport, check_same_distribution
from .normalize import Normalizer
from .prepare import TABLE_OPTIONS, features_for, in_target_units, model_extras, prepare
from .split import Split, split, split_indices, split_sizes

__all__ = ["Augmenter", "BUNDLED", "Column", "DataError", "Dataset", "MismatchReport", "Normalizer", "Preprocessor",
           "Split", "TABLE_OPTIONS", "check_same_distribution", "encode_labels", "features_for", "in_target_units", "model_extras", "format_roles", "from_arrays", "infer_roles", "load",
           "load_bundled", "load_npz", "load_table", "prepare", "read_table", "split", "split_indices", "split_sizes",
           "target_of"]
