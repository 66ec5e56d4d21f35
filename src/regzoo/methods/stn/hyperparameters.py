r"""Hyperparameters of a Self-Tuning Network: unconstrained storage, perturbation, projection.

Paper §4.3 ("Training the hypernetwork ... perturb λ with a scale σ ... the entropy term") and
the official ``stn_utils/hyperparameter.py``. Each hyperparameter λ_j lives as an unconstrained
real u_j and reaches its valid range through

.. math::

    \lambda_j = \mathrm{project}(u_j) =
    \begin{cases}
      \ell + (h-\ell)\,\sigma(u_j) & \text{bounded } (\ell, h) \\
      \ell + \mathrm{softplus}(u_j) & \text{lower bound only} \\
      \ell + e^{u_j} & \text{``log`` scale (lower bound only)}
    \end{cases}

(``floor`` for a discrete one). Training draws per-example hyperparameters
``u_b = u + softplus(ρ) ⊙ ε``, ``ε ~ N(0, I)``, and the scale learns with the entropy bonus of
the Gaussian perturbation, ``H = Σ_j log(softplus(ρ_j) √(2πe))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_real

SCALES = ("linear", "log")


@dataclass(frozen=True)
class Hyperparameter:
    """One tuned hyperparameter: start value, range, and the perturbation's initial scale.

    Args:
        init: the starting value (inside the range; the paper starts dropout at a deliberately
            poor 0.05).
        low, high: the valid range; ``high=math.inf`` for a half-line (softplus map).
        discrete: round down after projection (cutout length, number of holes).
        scale: ``"linear"`` (sigmoid/softplus maps, the official code) or ``"log"`` (λ = low + e^u,
            for strengths spanning decades such as an L2 coefficient; needs ``high=math.inf``).
        perturb_scale: initial σ of the perturbation in unconstrained space (official 0.5).
        per_example: draw one perturbation per example (default); ``False`` shares one draw
            across the batch, for hyperparameters a batch must apply jointly (the official
            ``minibatch=False`` flag).
    """

    init: float
    low: float = 0.0
    high: float = 1.0
    discrete: bool = False
    scale: str = "linear"
    perturb_scale: float = 0.5
    per_example: bool = True

    def __post_init__(self) -> None:
        check_choice("scale", self.scale, SCALES)
        low, high = float(self.low), float(self.high)
        init = check_real("init", self.init)
        check_real("perturb_scale", self.perturb_scale)
        if math.isnan(low) or math.isnan(high) or not low < high:
            raise ValueError(f"need low < high, got low={self.low}, high={self.high}")
        if self.perturb_scale <= 0:
            raise ValueError(f"perturb_scale must be > 0, got {self.perturb_scale}")
        if self.scale == "log" and not math.isinf(high):
            raise ValueError(f"scale='log' needs high=math.inf, got high={high}")
        if math.isinf(low):
            raise ValueError(f"low must be finite, got {low}; use an explicit lower bound")
        if not low < init < high:
            raise ValueError(f"init must lie strictly inside ({low}, {high}), got {init}: the "
                             "unconstrained value of a boundary point is infinite")

    def to_unconstrained(self, value: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`project` (logit, inverse softplus or log)."""
        if self.scale == "log":
            return torch.log(value - self.low)
        if math.isinf(self.high):
            return inverse_softplus(value - self.low)
        return torch.logit((value - self.low) / (self.high - self.low))

    def project(self, u: torch.Tensor) -> torch.Tensor:
        """Map unconstrained ``u`` into the range (and round down if discrete)."""
        if self.scale == "log":
            value = self.low + torch.exp(u)
        elif math.isinf(self.high):
            value = self.low + F.softplus(u)
        else:
            value = self.low + (self.high - self.low) * torch.sigmoid(u)
        return torch.floor(value) if self.discrete else value


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus⁻¹(x) = x + log(1 − e^{−x}), stable for small and large x > 0."""
    return x + torch.log(-torch.expm1(-x))


def gaussian_entropy(sigma: torch.Tensor) -> torch.Tensor:
    """Entropy of N(0, diag σ²): Σ_j log(σ_j √(2πe))."""
    return torch.log(sigma * math.sqrt(2 * math.pi * math.e)).sum()


@dataclass
class HyperBatch:
    """Per-example hyperparameters handed to a model's forward.

    ``net_input`` (B × h) is what the best-response layers read (the unconstrained, possibly
    perturbed values, paper §4.2); ``values`` (B × h) are the projected values a regulariser uses
    (dropout rates...), detached so the regulariser itself is never differentiated (paper §4.3:
    this is what makes non-differentiable hyperparameters tunable). ``batch["name"]`` is one
    hyperparameter's column.
    """

    net_input: torch.Tensor
    values: torch.Tensor
    index: Mapping[str, int]

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.index:
            raise KeyError(f"no hyperparameter named {name!r}; tuned: {sorted(self.index)}")
        return self.values[:, self.index[name]]


class HyperparameterSpace(nn.Module):
    """The tuned hyperparameters λ (unconstrained ``values``) and their perturbation scales.

    Both are parameters of this module and nothing else: the hyper step's optimisers own them,
    the weight step's optimiser never sees them.
    """

    def __init__(self, hyperparameters: Mapping[str, Hyperparameter]) -> None:
        super().__init__()
        if not hyperparameters:
            raise ValueError("hyperparameters is empty; give at least one, e.g. "
                             "{'dropout': Hyperparameter(init=0.05, high=0.9)}")
        for name, spec in hyperparameters.items():
            if not isinstance(spec, Hyperparameter):
                raise TypeError(f"hyperparameters[{name!r}] must be a Hyperparameter, got "
                                f"{type(spec).__name__}")
        self.specs = dict(hyperparameters)
        self.index = {name: i for i, name in enumerate(self.specs)}
        init = [spec.to_unconstrained(torch.tensor(float(spec.init), dtype=torch.float64))
                for spec in self.specs.values()]
        scale = [inverse_softplus(torch.tensor(spec.perturb_scale, dtype=torch.float64))
                 for spec in self.specs.values()]
        self.values = nn.Parameter(torch.stack(init).float())
        self.scales = nn.Parameter(torch.stack(scale).float())
        self.register_buffer("shared_noise", torch.tensor(
            [not spec.per_example for spec in self.specs.values()]), persistent=False)

    def __len__(self) -> int:
        return len(self.specs)

    def sigma(self) -> torch.Tensor:
        """The perturbation scales softplus(ρ)."""
        return F.softplus(self.scales)

    def entropy(self) -> torch.Tensor:
        """Entropy of the perturbation distribution (paper §4.3's bonus, official scale)."""
        return gaussian_entropy(self.sigma())

    def project(self, u: torch.Tensor) -> torch.Tensor:
        """Projected values of unconstrained ``u`` (… × h), column by column."""
        columns = [spec.project(u[..., j]) for j, spec in enumerate(self.specs.values())]
        return torch.stack(columns, dim=-1)

    def batch(self, batch_size: int, *, perturb: bool) -> HyperBatch:
        """Per-example hyperparameters: ``u + σ ⊙ ε`` per row if ``perturb``, else ``u``."""
        u = self.values.unsqueeze(0).expand(batch_size, -1)
        if perturb:
            noise = torch.randn(batch_size, len(self), device=u.device, dtype=u.dtype)
            noise = torch.where(self.shared_noise, noise[:1], noise)
            u = u + self.sigma() * noise
        return HyperBatch(u, self.project(u).detach(), self.index)

    def current(self) -> dict[str, float]:
        """The current (unperturbed) hyperparameter values by name."""
        with torch.no_grad():
            values = self.project(self.values)
        return {name: float(values[i]) for name, i in self.index.items()}

    def current_sigma(self) -> dict[str, float]:
        """The current perturbation scales by name."""
        with torch.no_grad():
            sigma = self.sigma()
        return {name: float(sigma[i]) for name, i in self.index.items()}
