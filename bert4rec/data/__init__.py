"""Data: raw MovieLens / sequence files in, plain-text training and evaluation files out, and back in.

The flow, one module per stage:

- ``bert4rec.data.raw``: find, download (checksum-verified) and parse the raw input formats;
- ``bert4rec.data.split``: filter, order and renumber per-user sequences, split leave-one-out, sample the
  evaluation negatives;
- ``bert4rec.data.files``: write and load the generated files (formats in ``data/README.md``);
- ``bert4rec.data.sessions``: the session protocol (sessions, split by date, cleansing);
- ``bert4rec.data.items``: item metadata (titles, genres, decade) and original-id maps;
- ``bert4rec.data.outdir``: which output folder the generator may replace (only one it provably wrote);
- ``bert4rec.data.dataset``: one generated dataset loaded for training and evaluated under its protocol;
- ``bert4rec.data.generate``: the whole pipeline of ``bert_train/gen_data_fin.py`` (``generate_dataset``).
"""

from bert4rec.data.files import (
    EvalSet,
    Vocab,
    load_eval_set,
    load_item_counts,
    load_train_instances,
    load_vocab,
    load_windows,
)
from bert4rec.data.generate import generate_dataset
from bert4rec.data.negatives import sample_popular_negatives
from bert4rec.data.options import SPLITS, GenerateOptions
from bert4rec.data.outdir import check_output_dir
from bert4rec.data.raw import DEFAULT_DOWNLOAD_URL, DOWNLOAD_URL_ENV, FORMATS, detect_format, download_file
from bert4rec.data.split import HOLDOUTS, build_sequences
from bert4rec.instances import TrainInstances

__all__ = [
    "DEFAULT_DOWNLOAD_URL",
    "DOWNLOAD_URL_ENV",
    "FORMATS",
    "HOLDOUTS",
    "SPLITS",
    "EvalSet",
    "GenerateOptions",
    "TrainInstances",
    "Vocab",
    "build_sequences",
    "check_output_dir",
    "detect_format",
    "download_file",
    "generate_dataset",
    "load_eval_set",
    "load_item_counts",
    "load_train_instances",
    "load_vocab",
    "load_windows",
    "sample_popular_negatives",
]
