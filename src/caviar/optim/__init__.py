"""Optimizers and learning-rate schedules over per-member (K,) hyperparameters."""

from caviar.optim.optimizers import Optimizer, make_optimizer
from caviar.optim.schedules import decayed_lr

__all__ = ["Optimizer", "decayed_lr", "make_optimizer"]
