"""BERT4Rec and friends: honest sequential recommendation in PaddlePaddle.

Importing the package applies safe CPU defaults (see ``bert4rec.cpu``) before Paddle is loaded.
"""

from bert4rec.cpu import configure_cpu_environment

CPU_SETTINGS = configure_cpu_environment()
