"""Tuning: search spaces on each hyperparameter's own scale, samplers, and the study spec.

Import the pieces from their modules (``caviar.tune.space``, ``caviar.tune.samplers``,
``caviar.tune.spec``); this package itself imports nothing heavy.
"""
