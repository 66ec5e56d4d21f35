"""regzoo: regularization methods of 27 papers, faithfully implemented in PyTorch.

Find a method by its slug (``regzoo list``); each lives at ``regzoo.methods.<slug>``.
"""

from regzoo.core.compose import LossBreakdown, Objective
from regzoo.registry import MethodCard, card, cards

__version__ = "0.1.0"

__all__ = ["LossBreakdown", "MethodCard", "Objective", "__version__", "card", "cards"]
