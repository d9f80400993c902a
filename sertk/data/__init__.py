"""Kaldi-style data dirs and folds: the only way stages read and write utterance tables."""

from sertk.data.datadir import (
    DATA_FILES,
    DataDir,
    read_data_dir,
    read_table,
    validate_data_dir,
    write_data_dir,
    write_table,
)

__all__ = [
    "DATA_FILES",
    "DataDir",
    "read_data_dir",
    "read_table",
    "validate_data_dir",
    "write_data_dir",
    "write_table",
]
