"""STN: Self-Tuning Networks (MacKay et al., ICLR 2019, arXiv 1903.03088).

* :class:`Hyperparameter`, :class:`HyperparameterSpace` — tuned hyperparameters, §4.3.
* :class:`HyperLinear`, :class:`HyperConv2d`, :func:`per_example_dropout` — the structured
  best-response layers, §4.2.
* :func:`fit_stn` — the alternating weight / hyperparameter training, Algorithm 1.
"""

from regzoo.methods.stn.hyperparameters import (
    HyperBatch,
    Hyperparameter,
    HyperparameterSpace,
    gaussian_entropy,
)
from regzoo.methods.stn.layers import HyperConv2d, HyperLinear, HyperMLP, per_example_dropout
from regzoo.methods.stn.procedure import STNConfig, STNResult, TunedNetwork, fit_stn

__all__ = [
    "HyperBatch",
    "HyperConv2d",
    "HyperLinear",
    "HyperMLP",
    "Hyperparameter",
    "HyperparameterSpace",
    "STNConfig",
    "STNResult",
    "TunedNetwork",
    "fit_stn",
    "gaussian_entropy",
    "per_example_dropout",
]
