"""ELR: Early-Learning Regularization (Liu et al., NeurIPS 2020, arXiv 2007.00151).

* :class:`EarlyLearningRegularization` — the criterion (CE + λ·log(1 − ⟨t, p⟩)), paper §4.
* :func:`fit_elr_plus` — ELR+, the paper's two-network recipe (§4.2, appendix).
"""

from regzoo.methods.elr.loss import EarlyLearningRegularization, elr_regularizer
from regzoo.methods.elr.plus import ELRPlusConfig, ELRPlusResult, fit_elr_plus

__all__ = [
    "ELRPlusConfig",
    "ELRPlusResult",
    "EarlyLearningRegularization",
    "elr_regularizer",
    "fit_elr_plus",
]
