"""The training loop: a population of members trained together, one mini-batch at a time."""

from caviar.train.history import MemberHistory
from caviar.train.trainer import Callback, Trainer

__all__ = ["Callback", "MemberHistory", "Trainer"]
