"""BERT4Rec and friends: honest sequential recommendation in PaddlePaddle.

Importing the package applies safe CPU defaults (see ``bert4rec.cpu``) before Paddle is loaded, and loads nothing
heavy: the Python API (``Dataset``, ``fit``, ``load_run``; see ``bert4rec.api``) imports Paddle, quietly, when a
call needs it.
"""

from bert4rec.cpu import configure_cpu_environment

CPU_SETTINGS = configure_cpu_environment()

from bert4rec.api import Dataset, Run, fit, load_run  # noqa: E402  (after the CPU settings)
from bert4rec.errors import UserError  # noqa: E402

__all__ = ["CPU_SETTINGS", "Dataset", "Run", "UserError", "fit", "load_run"]
