"""Hyper-parameter search over any model of the project (``tune.py``): the grammar of ``hyper.test``, the
Optuna study, the outputs."""
