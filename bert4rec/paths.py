"""Where the default folders are: a source checkout keeps them in the checkout, an installed package in the
current directory.

In a checkout (the folder above ``bert4rec/`` holds ``trainrec.py`` and ``bert_train/``) the tools read and write
``<checkout>/data``, ``<checkout>/checkpoints`` and the configs in ``<checkout>/bert_train`` wherever they are
started from, as they always did. Installed with pip, the package has no checkout around it: the default folders are
then relative to the current working directory, and there are no bundled configs (pass ``--CONFIG_PATH``).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def checkout_root() -> Path | None:
    """The source checkout this package sits in, or None when it is installed (e.g. in site-packages)."""
    root = PACKAGE_DIR.parent
    if (root / "trainrec.py").is_file() and (root / "bert_train").is_dir():
        return root
    return None


def project_root() -> Path:
    """The folder the default ``data/`` and ``checkpoints/`` live in: the checkout, else the current directory."""
    root = checkout_root()
    return root if root is not None else Path.cwd()


def config_dir() -> Path | None:
    """The checkout's ``bert_train/`` (the model configs), or None outside a checkout."""
    root = checkout_root()
    return root / "bert_train" if root is not None else None
