"""PER (soft equivariance under mixed symmetries) at CPU scale: two tiers (spec §5).

**Tier A, ``inertia``** — the paper's modified-inertia regression (official
``ModifiedInertia``): ``k = 5`` masses, target ``I + 0.3 (I e_z) e_zᵀ``, exactly
O(2)_z-equivariant, approximately O(3)-equivariant, O(2)_x and O(2)_y broken. Candidate types,
in the paper's order: (O(3), O(2)_z, O(2)_x, O(2)_y) (official ``o3subgroupsoftemlp``). Inputs
are lifted to per-particle features ``(m_i, |r_i|², r_i, r_i r_iᵀ)`` (``10 T0 ⊕ 5 T1 ⊕ 5 T2``,
all arms; spec §5 allows precomputed ``r_i r_iᵀ`` in place of EMLP's wide bilinear layers).
Network: a small EMLP-like net on tensor representations: three hidden blocks of ``16 T0 ⊕ 8 T1
⊕ 8 T2`` plus one gate scalar per non-scalar channel, output ``T2``. Each block is ``Linear``
(regularised, not projected) → parameter-light O(3)-equivariant bilinear products
(:class:`TensorBlock`, added to the linear output as in EMLP's ``BiLinear`` residual) → gated
nonlinearity (swish on scalars, each T1/T2 channel times the sigmoid of its gate). Since the
bilinear and gate parts are equivariant for all of O(3), projecting the linear layers makes the
whole network exactly equivariant (without the official gated residual path described below).
Arms (default): ``mlp`` (plain MLP 70-128-128-128-9, swish, the paper's MLP baseline),
``emlp_o3`` (linear layers constrained to the O(3)-equivariant subspace: the λ → ∞ limit, EMLP
with the misspecified group), ``per_fixed`` (official initial strengths λ = (0, 100, 100, 100),
never adjusted), ``per_auto`` (the same, rescaled once at ``adjust_at`` with power 2: paper
§4.2); optional (``--set arms_a=...``): ``unreg`` (tensor net, λ = 0) and ``emlp_o2z`` (hard
O(2)_z, the correct group). Training, the official recipe (``recipe="official"``, read from
``train_softemlp_checkpoint.py`` and ``models/objax_per.py`` at kim-hyunsu/PER@156cf90): Adam with
the learning rate cosine-decayed per epoch to ``min_lr = 0``; for the soft (PER and λ = 0 tensor)
networks an L2 term ``wd · Σ ½(‖W‖² + ‖b‖²)`` over the regularised linear layers only (``rglr2``, wd
= 2e-5: both inertia sweep files of the repository fix it, ``sweeps/inertia_table.yaml`` — a grid
over o3emlp / o3mixedemlp / o3subgroupsoftemlp with automatic strengths, by its name the table runs
— and the bayes sweep ``sweeps/inertiao3subgroupsoftemlp.yaml``; the script's argparse default is
2e-4, l. 1138-1143, ``--set weight_decay=2e-4``; the shell scripts name ``train_softemlp.py``,
absent from the repository, and pass neither) plus ``gated_wd · Σ w_gated²`` (1.0, l. 1147-1150: no
script or sweep sets it, although the default's own comment says 0 for any softemlp and 1 for
mixedemlp; ``--set gated_wd=0`` follows the comment) on the gated nonlinearity's residual path
``σ(gate)·v + w_gated ⊙ swish(v)`` (``RPPGatedNonlinearity``, ``w_gated`` initialised to 1e-3 per
component, present in every SoftEMLP block unless ``--gatednonlinearity``; it is not equivariant,
hence its own decay); the hard EMLP and the MLP carry no L2 at all (the script's ``basic_wd``
reaches only a network named exactly ``mlp``, which no option builds). The official
``--equiv_decay`` (a cosine decay of the strengths) is off in every inertia script and sweep of the
repository, so it is not offered. Arms ``mlp_plain`` and ``per_auto_plain`` keep the earlier setup
(``recipe="plain"``: constant learning rate, Adam's coupled decay 2e-4 on every parameter, plain
gated nonlinearity) for comparison. Full batch on N = 256 (the spec's small size; the paper's 1024
was 4× too slow here), 600 epochs with the strength adjustment at epoch 300 (official default 2000
of 8000, official sweep 1000–7000 of 8000; at epoch 150 the recorded penalties still reflected the
random initialisation, not the data: λ gap −0.19 decades on tuning seed 0, +0.44 at 300), window 100
and warm-up 50 as official. Learning rates, chosen per arm by validation MSE on tuning seed 0
(official 1e-3), before the audit moved wd from the argparse 2e-4 to the sweeps' 2e-5 and not
re-chosen since: under the official recipe 1e-3 for the MLP (7.06 / 5.95 / 6.86 / 7.22 at 3e-4 /
1e-3 / 3e-3 / 1e-2) and 3e-3 for the tensor networks (PER auto 8.68 / 8.45 / 2.92 / 8.89 at 1e-3 /
3e-3 / 1e-2 / 2e-2). 1e-2 was best on seed 0 but diverged in the first full run at c3edf75 (PER
auto, seed 4: non-finite loss at epoch 333, just after the strength rescaling), so the committed run
uses the next best, 3e-3, which is also the plain recipe's rate (swept 5e-4–2e-3
then: with 13× fewer epochs the tensor net had not left the mean predictor at 1e-3; 1e-2
diverged). Test MSE at the validation-best epoch after ``2 · adjust_at`` (official
early-stopping rule; here the last epoch). Learning rates and ``adjust_at`` were chosen on seed
0, which the committed run (seeds 1–5) does not use.

**Tier B, ``digits_d4``** — a finite-group variant (spec §5): sklearn digits (8×8), D4 acting by
pixel permutation, hidden layers = copies of the regular representation (ReLU is then
equivariant), projectors by Reynolds averaging. Candidate types: C4 rotations, horizontal flip
(mirror left-right), vertical flip. Target built from a random teacher MLP ``s``
(drawn by the seed): ``y = s(x) + s(h x)``: exactly h-flip invariant, C4 and v-flip broken.
Each image is shown under a random D4 element, so the input distribution is D4-invariant and
only the target singles out the flip (as the Gaussian inputs of the inertia task are
O(3)-invariant). Arms ``mlp`` (same net, λ = 0), ``per_fixed`` (λ = 1 for every type),
``per_auto``; 200 training images, the other 1597 for testing; full batch, Adam lr 1e-2 (at
1e-3 the initial weights' off-subspace parts had not decayed by the adjustment and λ_vflip
stayed at 0.99, seed 0), L2 1e-4, 400 epochs, adjustment at 110 (regzoo's construction, not an
official experiment, so it keeps this plain recipe: constant lr, decay on every parameter).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.methods.soft_equivariance import (
    O2,
    O3,
    PermutationLayerProjector,
    SoftEquivariance,
    TensorLayerProjector,
    TensorRep,
    make_hard_equivariant,
    modified_inertia,
)
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import Claim, Reproduction, Unit, UnitEnv, UnitResult
from regzoo.train import seed_everything, time_steps

ARMS_A = ("mlp", "unreg", "emlp_o3", "emlp_o2z", "per_fixed", "per_auto", "mlp_plain",
          "per_auto_plain")
RECIPES = ("official", "plain")
SOFT_ARMS = ("unreg", "per_fixed", "per_auto")
"""Tier-A arms built as the official SoftEMLP (L2 on its linear layers, gated residual path)."""
ARMS_B = ("mlp", "per_fixed", "per_auto")
TYPES_A = ("O3", "O2z", "O2x", "O2y")
TYPES_B = ("C4", "hflip", "vflip")
K = 5


@dataclasses.dataclass(frozen=True)
class SoftEquivarianceConfig(ReproConfig):
    """Settings of both tiers; presets ``tiny``, ``quick``, ``full``."""

    settings: tuple[str, ...] = ("inertia", "digits_d4")
    arms_a: tuple[str, ...] = ("mlp", "emlp_o3", "per_fixed", "per_auto", "mlp_plain",
                               "per_auto_plain")
    arms_b: tuple[str, ...] = ARMS_B
    # Tier A
    n_train: int = 256
    n_val: int = 256
    n_test: int = 2000
    noise: float = 0.3
    epochs: int = 600
    adjust_at: int = 300
    batch_size: int = 256
    recipe: str = "official"
    lr: float = 3e-3
    mlp_lr: float = 1e-3
    plain_lr: float = 3e-3
    min_lr: float = 0.0
    weight_decay: float = 2e-5
    plain_weight_decay: float = 2e-4
    gated_wd: float = 1.0
    gate_init: float = 1e-3
    strength: float = 100.0
    power: float = 2.0
    window: int = 100
    warmup: int = 50
    channels: tuple[int, ...] = (16, 8, 8)
    blocks: int = 3
    mlp_width: int = 128
    eval_every: int = 25
    # Tier B
    b_train: int = 200
    b_epochs: int = 400
    b_adjust_at: int = 110
    b_copies: int = 8
    b_strength: float = 1.0
    b_lr: float = 1e-2
    b_weight_decay: float = 1e-4

    positive_fields = ("epochs", "batch_size", "lr", "mlp_lr", "plain_lr", "n_train", "n_val",
                       "n_test", "b_train", "b_epochs", "b_copies", "b_lr", "eval_every")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if not self.settings or any(s not in ("inertia", "digits_d4") for s in self.settings):
            raise ValueError(f"settings must be a non-empty subset of ('inertia', 'digits_d4'), "
                             f"got {self.settings}")
        if any(a not in ARMS_A for a in self.arms_a) or "mlp" not in self.arms_a:
            raise ValueError(f"arms_a must be a subset of {ARMS_A} with 'mlp', got "
                             f"{self.arms_a}")
        if any(a not in ARMS_B for a in self.arms_b) or "mlp" not in self.arms_b:
            raise ValueError(f"arms_b must be a subset of {ARMS_B} with 'mlp', got "
                             f"{self.arms_b}")
        for name in ("weight_decay", "plain_weight_decay", "gated_wd", "b_weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, at, total in (("adjust_at", self.adjust_at, self.epochs),
                                ("b_adjust_at", self.b_adjust_at, self.b_epochs)):
            if not self.window < at < total:
                raise ValueError(f"{name} must lie in (window={self.window}, epochs={total}), "
                                 f"got {at}")

    @classmethod
    def tiny(cls) -> SoftEquivarianceConfig:
        return cls(seeds=(0,), n_train=128, n_val=64, n_test=128, epochs=12, adjust_at=6,
                   window=4, warmup=2, batch_size=64, channels=(4, 2, 2), blocks=1, mlp_width=16,
                   eval_every=4, b_train=60, b_epochs=12, b_adjust_at=6, b_copies=2)

    @classmethod
    def quick(cls) -> SoftEquivarianceConfig:
        return cls(seeds=(1, 2, 3), epochs=400, adjust_at=200, b_epochs=400, b_adjust_at=110)

    @classmethod
    def full(cls) -> SoftEquivarianceConfig:
        return cls(seeds=(1, 2, 3, 4, 5))


# --------------------------------------------------------------------------------------------
# Tier A: the tensor network
# --------------------------------------------------------------------------------------------

def lift_inertia_inputs(x: torch.Tensor, k: int = K) -> torch.Tensor:
    """``(m_i, r_i) → (m_i, |r_i|², r_i, r_i r_iᵀ)``: ``2k T0 ⊕ k T1 ⊕ k T2``.

    Per-particle polynomial features are O(3)-equivariant, so they change no symmetry of the
    task; they let a small network represent the cubic target (spec §5 allows precomputed
    ``r_i r_iᵀ`` in place of EMLP's wide bilinear layers). Every arm gets the same inputs.
    """
    n = x.shape[0]
    m, r = x[:, :k], x[:, k:].reshape(n, k, 3)
    outer = (r[..., :, None] * r[..., None, :]).reshape(n, 9 * k)
    return torch.cat([m, r.square().sum(-1), r.reshape(n, 3 * k), outer], dim=1)


LIFTED_REP = TensorRep((2 * K, K, K))


class TensorBlock(nn.Module):
    """``Linear → (+ equivariant bilinear) → gated nonlinearity`` between tensor reps.

    The linear map outputs ``(s + g) T0 ⊕ v T1 ⊕ t T2`` with ``g = v + t`` gate scalars. The
    bilinear part (a sparse stand-in for EMLP's ``BiLinear``, added to the linear output) has
    learnable per-channel coefficients (scalars commute with every group element, so they keep
    equivariance): ``v_{2c} v_{2c+1}ᵀ`` into T2 channel ``c`` (``c < v/2``), ``M_{c mod t} v_c``
    into T1 channel ``c``, ``⟨v_c, v_{c+1}⟩`` into scalar ``c`` (``c < v``), and the
    scalar–tensor products ``s_c v_c``, ``s_c M_c``. Every term is O(3)-equivariant.

    With ``gate_init`` set, the official SoftEMLP's gated nonlinearity: a residual path
    ``w_gated ⊙ swish(v)`` over every output component v (before gating), ``w_gated`` a
    trainable vector starting at ``gate_init``; it is not equivariant (swish acts entry-wise on
    vectors and matrices), so the official recipe decays it separately.
    """

    def __init__(self, rep_in: TensorRep, channels: tuple[int, int, int],
                 gate_init: float | None = None) -> None:
        super().__init__()
        s, v, t = channels
        if v < 2 or t < 1 or s < max(v, t):
            raise ValueError(f"channels (s, v, t) need v ≥ 2, t ≥ 1, s ≥ max(v, t); got "
                             f"{channels}")
        self.s, self.v, self.t = s, v, t
        self.pairs = min(t, v // 2)
        self.rep_out = TensorRep((s + v + t, v, t))
        self.linear = nn.Linear(rep_in.dim, self.rep_out.dim)
        nn.init.orthogonal_(self.linear.weight)  # official SoftEMLP init
        self.coef = nn.ParameterDict({name: nn.Parameter(torch.full((size,), 0.1)) for name, size
                                      in (("outer", self.pairs), ("mv", v), ("dot", v),
                                          ("sv", v), ("sm", t))})
        self.w_gated = (None if gate_init is None else
                        nn.Parameter(torch.full((s + 3 * v + 9 * t,), float(gate_init))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, v, t, c = self.s, self.v, self.t, self.coef
        z = self.linear(x)
        n = z.shape[0]
        g0 = s + v + t
        scal, vec = z[:, :g0], z[:, g0:g0 + 3 * v].reshape(n, v, 3)
        mat = z[:, g0 + 3 * v:].reshape(n, t, 3, 3)
        k = self.pairs
        outer = vec[:, 0:2 * k:2, :, None] * vec[:, 1:2 * k:2, None, :]
        mat = mat + torch.cat([c["outer"][:, None, None] * outer, mat.new_zeros(n, t - k, 3, 3)],
                              dim=1)
        mat = mat + c["sm"][:, None, None] * scal[:, :t, None, None] * mat
        idx = torch.arange(v, device=z.device) % t
        mv = (mat[:, idx] * vec[:, :, None, :]).sum(-1)
        vec = vec + c["mv"][:, None] * mv + c["sv"][:, None] * scal[:, :v, None] * vec
        dots = (vec * vec.roll(-1, dims=1)).sum(-1)
        scal = torch.cat([scal[:, :v] + c["dot"] * dots, scal[:, v:]], dim=1)
        values = torch.cat([scal[:, :s], vec.reshape(n, -1), mat.reshape(n, -1)], dim=1)
        gates = torch.sigmoid(scal[:, s:])
        vec = vec * gates[:, :v, None]
        mat = mat * gates[:, v:, None, None]
        out = torch.cat([F.silu(scal[:, :s]), vec.reshape(n, -1), mat.reshape(n, -1)], dim=1)
        return out if self.w_gated is None else out + self.w_gated * F.silu(values)


class TensorNet(nn.Module):
    """Input ``LIFTED_REP`` → ``blocks`` × :class:`TensorBlock` → ``Linear`` to ``T2``."""

    def __init__(self, channels: tuple[int, ...], blocks: int,
                 gate_init: float | None = None) -> None:
        super().__init__()
        self.rep_in = LIFTED_REP
        self.hidden = TensorRep(tuple(channels))
        reps_in, mods = [self.rep_in], []
        for _ in range(blocks):
            mods.append(TensorBlock(reps_in[-1], tuple(channels),  # type: ignore[arg-type]
                                    gate_init))
            reps_in.append(self.hidden)
        self.blocks = nn.ModuleList(mods)
        self.head = nn.Linear(self.hidden.dim, 9)
        nn.init.orthogonal_(self.head.weight)
        self.rep_out = TensorRep((0, 0, 1))

    def linears(self) -> list[nn.Linear]:
        """The regularised layers, in order."""
        return [b.linear for b in self.blocks] + [self.head]

    def official_l2(self, weight_decay: float, gated_wd: float) -> torch.Tensor:
        """``wd · Σ ½(‖W‖² + ‖b‖²)`` over :meth:`linears` plus ``gated_wd · Σ ‖w_gated‖²``."""
        l2 = sum(0.5 * (lin.weight.square().sum() + lin.bias.square().sum())
                 for lin in self.linears())
        gated = sum(b.w_gated.square().sum() for b in self.blocks if b.w_gated is not None)
        return weight_decay * l2 + gated_wd * gated

    def layer_reps(self) -> list[tuple[TensorRep, TensorRep]]:
        """``(rep_in, rep_out)`` of each regularised layer."""
        ins = [self.rep_in] + [self.hidden] * (len(self.blocks))
        outs = [b.rep_out for b in self.blocks] + [self.rep_out]
        return list(zip(ins, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def inertia_groups() -> dict[str, Any]:
    """The candidate types of the official ``o3subgroupsoftemlp``, largest first."""
    return {"O3": O3(), "O2z": O2(2), "O2x": O2(0), "O2y": O2(1)}


def tensor_projectors(net: TensorNet, groups: dict[str, Any]) -> dict[str, list[Any]]:
    """One :class:`TensorLayerProjector` per regularised layer per type."""
    return {name: [TensorLayerProjector(a, b, g) for a, b in net.layer_reps()]
            for name, g in groups.items()}


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(LIFTED_REP.dim, width), nn.SiLU(), nn.Linear(width, width),
                         nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 9))


def _mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.mse_loss(model(x), y))


def arm_recipe(config: SoftEquivarianceConfig, arm: str) -> tuple[str, str]:
    """``(model arm, recipe)``: a ``*_plain`` arm is its model under ``recipe="plain"``."""
    if arm.endswith("_plain"):
        return arm.removesuffix("_plain"), "plain"
    return arm, config.recipe


def build_inertia_arm(config: SoftEquivarianceConfig, arm: str
                      ) -> tuple[nn.Module, SoftEquivariance | None]:
    """The model of ``arm`` and its PER penalty (``None`` for arms without one)."""
    arm, recipe = arm_recipe(config, arm)
    if arm == "mlp":
        return _mlp(config.mlp_width), None
    official_soft = recipe == "official" and arm in SOFT_ARMS
    net = TensorNet(config.channels, config.blocks,
                    gate_init=config.gate_init if official_soft else None)
    if arm == "unreg":
        return net, None
    projectors = tensor_projectors(net, inertia_groups())
    if arm in ("emlp_o3", "emlp_o2z"):
        make_hard_equivariant(net.linears(), projectors["O3" if arm == "emlp_o3" else "O2z"])
        return net, None
    strengths = {n: 0.0 if i == 0 else config.strength for i, n in enumerate(TYPES_A)}
    penalty = SoftEquivariance(net.linears(), projectors, strengths,
                               adjust_at=config.adjust_at if arm == "per_auto" else None,
                               power=config.power, window=config.window, warmup=config.warmup)
    return net, penalty


def cosine_lr(lr: float, epoch: int, epochs: int, min_lr: float = 0.0) -> float:
    """The official ``cosine_schedule(lr, epoch, epochs, min_value=min_lr)``, set per epoch.

    ``min_lr + (lr − min_lr) · ½ (1 + cos(π · epoch / epochs))``.
    """
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def _train(model: nn.Module, penalty: SoftEquivariance | None, x: torch.Tensor,
           y: torch.Tensor, *, epochs: int, batch_size: int, lr: float, weight_decay: float,
           seed: int, evaluate: Any, eval_from: int, eval_every: int,
           l2: Any = None, min_lr: float | None = None) -> dict[str, Any]:
    """Adam, official (``l2`` given) or plain recipe.

    With ``l2`` (a callable), its term joins the loss and ``min_lr`` gives the official
    per-epoch cosine decay lr → min_lr; else Adam's coupled decay ``weight_decay`` on every
    parameter (``wd · ½‖θ‖²`` in the loss) at a constant learning rate (``recipe="plain"``).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr,
                                 weight_decay=0.0 if l2 is not None else weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    best = (math.inf, math.inf, -1)
    curve: list[float] = []
    for epoch in range(epochs):
        if penalty is not None:
            penalty.set_epoch(epoch)
        if min_lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(lr, epoch, epochs, min_lr)
        order = torch.randperm(n, generator=gen).to(x.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss = F.mse_loss(model(x[idx]), y[idx])
            if penalty is not None:
                loss = loss + penalty()
            if l2 is not None:
                loss = loss + l2()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {float(loss)} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            val, test = evaluate(model)
            curve.append(test)
            if epoch + 1 >= eval_from and val < best[0]:
                best = (val, test, epoch + 1)
    if penalty is not None:
        penalty.set_epoch(epochs)
    return {"best_val": best[0], "test_at_best_val": best[1], "best_epoch": best[2],
            "curve": curve}


def run_inertia(config: SoftEquivarianceConfig, arm: str, seed: int,
                device: torch.device | str = "cpu") -> UnitResult:
    """Train one Tier-A arm on ``device``; test MSE at the validation-best epoch.

    The epoch is chosen after ``2 adjust_at``. Data, initialisation and batch order are drawn
    on the CPU, so a seed means the same run on any device.
    """
    base = 10_000 * (seed + 1)
    splits = [modified_inertia(n, noise=config.noise, seed=base + i)
              for i, n in enumerate((config.n_train, config.n_val, config.n_test))]
    (x, y), (xv, yv), (xt, yt) = ((lift_inertia_inputs(a).to(device), b.to(device))
                                  for a, b in splits)
    seed_everything(seed)
    model, penalty = build_inertia_arm(config, arm)
    model.to(device)
    if penalty is not None:
        penalty.to(device)
    model_arm, recipe = arm_recipe(config, arm)
    official = recipe == "official"
    l2 = None
    if official:
        l2 = ((lambda: model.official_l2(config.weight_decay, config.gated_wd))
              if model_arm in SOFT_ARMS else (lambda: x.new_zeros(())))
    lr = config.plain_lr if not official else config.mlp_lr if model_arm == "mlp" else config.lr
    out = _train(model, penalty, x, y, epochs=config.epochs, batch_size=config.batch_size,
                 lr=lr, weight_decay=config.plain_weight_decay, seed=seed,
                 evaluate=lambda m: (_mse(m, xv, yv), _mse(m, xt, yt)),
                 eval_from=min(2 * config.adjust_at, config.epochs),
                 eval_every=config.eval_every, l2=l2,
                 min_lr=config.min_lr if official else None)
    metrics = {"test_mse": out["test_at_best_val"], "val_mse": out["best_val"],
               "log10_test_mse": math.log10(out["test_at_best_val"]),
               "final_test_mse": out["curve"][-1], "best_epoch": float(out["best_epoch"])}
    if penalty is not None:
        lam = penalty.strength()
        values = {n: float(v.detach()) for n, v in penalty.values().items()}
        for name in TYPES_A:
            metrics[f"lambda_{name}"] = lam[name]
            metrics[f"R_{name}"] = values[name]
        metrics["log10_lambda_gap"] = _log_gap(lam, "O2z", ("O2x", "O2y"))
    return UnitResult(metrics, {"test_mse": out["curve"]})


def _log_gap(lam: dict[str, float], top: str, others: tuple[str, ...]) -> float:
    """``log10 λ_top − max_other log10 λ_other`` (0 for equal strengths)."""
    def log(v: float) -> float:
        return math.log10(v) if v > 0 else -300.0
    return log(lam[top]) - max(log(lam[o]) for o in others)


# --------------------------------------------------------------------------------------------
# Tier B: D4 on digits
# --------------------------------------------------------------------------------------------

def d4_pixel_generators(side: int = 8) -> dict[str, np.ndarray]:
    """Pixel permutations ``π`` with ``(ρ(g) x)[π(j)] = x[j]`` of rot90, h-flip and v-flip."""
    i, j = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    flat = lambda a, b: (a * side + b).reshape(-1)  # noqa: E731 (index of pixel (a, b))
    return {"rot90": flat(j, side - 1 - i), "hflip": flat(i, side - 1 - j),
            "vflip": flat(side - 1 - i, j)}


def _d4_elements(gens: dict[str, np.ndarray]) -> list[np.ndarray]:
    elements = [np.arange(gens["rot90"].shape[0])]
    frontier = list(elements)
    while frontier:
        new = []
        for p in frontier:
            for g in gens.values():
                q = g[p]
                if not any(np.array_equal(q, e) for e in elements):
                    elements.append(q)
                    new.append(q)
        frontier = new
    return elements


def regular_generators(gens: dict[str, np.ndarray], copies: int) -> dict[str, np.ndarray]:
    """Each generator's permutation of ``copies`` copies of D4's regular representation."""
    elements = _d4_elements(gens)
    keys = {e.tobytes(): i for i, e in enumerate(elements)}
    out = {}
    for name, g in gens.items():
        one = np.array([keys[g[e].tobytes()] for e in elements])
        out[name] = np.concatenate([one + c * len(elements) for c in range(copies)])
    return out


def d4_apply(x: torch.Tensor, perm: np.ndarray) -> torch.Tensor:
    """``ρ(g) x`` for a batch of flattened images and a pixel permutation ``π``."""
    out = torch.empty_like(x)
    out[:, torch.from_numpy(perm)] = x
    return out


def digits_target(x: torch.Tensor, seed: int) -> torch.Tensor:
    """``s(x) + s(h x)`` for a random tanh teacher ``s`` (drawn by ``seed``), ``h`` = h-flip.

    Exactly invariant under the horizontal flip, not under C4 rotations or the vertical flip.
    """
    gen = torch.Generator().manual_seed(7919 * (seed + 1))
    w = torch.randn(64, 32, generator=gen) / 2.0
    v = torch.randn(32, generator=gen) / math.sqrt(32)
    xc = x - x.mean()
    flip = d4_pixel_generators()["hflip"]
    return torch.tanh(xc @ w) @ v + torch.tanh(d4_apply(xc, flip) @ w) @ v


def d4_net(copies: int) -> nn.Sequential:
    """64 pixels → ``8·copies`` → ``8·copies`` → 1 with ReLU (regular reps: ReLU equivariant)."""
    width = 8 * copies
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 1))


def d4_projectors(copies: int) -> dict[str, list[PermutationLayerProjector]]:
    """Reynolds projectors of C4, {e, h-flip}, {e, v-flip} for the three layers of ``d4_net``."""
    pix = d4_pixel_generators()
    reg = regular_generators(pix, copies)
    trivial = np.zeros(1, dtype=np.int64)
    generators = {"C4": ("rot90",), "hflip": ("hflip",), "vflip": ("vflip",)}
    out = {}
    for name, gs in generators.items():
        layers = [(pix, reg), (reg, reg), (reg, None)]
        out[name] = [PermutationLayerProjector(
            np.stack([a[g] for g in gs]),
            np.stack([trivial if b is None else b[g] for g in gs]), name=name)
            for a, b in layers]
    return out


def run_digits(config: SoftEquivarianceConfig, arm: str, seed: int,
               device: torch.device | str = "cpu") -> UnitResult:
    """Train one Tier-B arm full-batch on ``device``; test MSE at the end.

    There is no validation split: N is small.
    """
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().data.astype(np.float32) / 16.0)
    # Each image under a random element of D4, so the input distribution is D4-invariant: then
    # only the target decides which symmetries the data gradient respects (as for the
    # rotation-invariant Gaussian inputs of the inertia task).
    elements = _d4_elements(d4_pixel_generators())
    pick = torch.randint(len(elements), (images.shape[0],),
                         generator=torch.Generator().manual_seed(10_000 + seed))
    images = torch.stack([d4_apply(img[None], elements[int(i)])[0]
                          for img, i in zip(images, pick)])
    y_all = digits_target(images, seed)
    y_all = (y_all - y_all.mean()) / y_all.std()
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    tr, te = order[:config.b_train], order[config.b_train:]
    x, y, xt, yt = (t.to(device) for t in (images[tr], y_all[tr, None], images[te],
                                            y_all[te, None]))
    seed_everything(seed)
    model = d4_net(config.b_copies).to(device)
    penalty = None
    if arm != "mlp":
        penalty = SoftEquivariance([m for m in model if isinstance(m, nn.Linear)],
                                   d4_projectors(config.b_copies),
                                   {n: config.b_strength for n in TYPES_B},
                                   adjust_at=config.b_adjust_at if arm == "per_auto" else None,
                                   power=config.power, window=config.window,
                                   warmup=config.warmup).to(device)
    out = _train(model, penalty, x, y, epochs=config.b_epochs, batch_size=x.shape[0],
                 lr=config.b_lr, weight_decay=config.b_weight_decay, seed=seed,
                 evaluate=lambda m: (0.0, _mse(m, xt, yt)), eval_from=config.b_epochs,
                 eval_every=config.eval_every)
    metrics = {"test_mse": out["curve"][-1], "log10_test_mse": math.log10(out["curve"][-1])}
    if penalty is not None:
        lam = penalty.strength()
        for name in TYPES_B:
            metrics[f"lambda_{name}"] = lam[name]
        metrics["log10_lambda_gap"] = _log_gap(lam, "hflip", ("C4", "vflip"))
    return UnitResult(metrics, {"test_mse": out["curve"]})


# --------------------------------------------------------------------------------------------
# The reproduction
# --------------------------------------------------------------------------------------------

class SoftEquivarianceReproduction(Reproduction):
    """PER vs MLP, hard-equivariant and fixed-strength models; the discovered strengths."""

    slug = "soft_equivariance"
    config_type = SoftEquivarianceConfig
    title = "Regularizing Towards Soft Equivariance Under Mixed Symmetries (PER)"
    plot_curves = (("test_mse", "test MSE (every eval_every epochs)"),)
    arm_labels = {"mlp": "MLP", "unreg": "tensor net, λ = 0", "emlp_o3": "EMLP O(3) (hard)",
                  "emlp_o2z": "EMLP O(2)_z (hard)", "per_fixed": "PER fixed λ",
                  "per_auto": "PER auto λ", "mlp_plain": "MLP, plain recipe",
                  "per_auto_plain": "PER auto λ, plain recipe"}
    unit_axes = ("seeds",)
    table_metrics = ("test_mse", "log10_test_mse", "log10_lambda_gap", "lambda_O2z",
                     "lambda_O2x", "lambda_O2y", "lambda_hflip", "lambda_C4", "lambda_vflip")

    def units(self, config: SoftEquivarianceConfig) -> list[Unit]:
        units = []
        for seed in config.seeds:
            if "inertia" in config.settings:
                units += [Unit("inertia", arm, seed) for arm in config.arms_a]
            if "digits_d4" in config.settings:
                units += [Unit("digits_d4", arm, seed) for arm in config.arms_b]
        return units

    def run_unit(self, config: SoftEquivarianceConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        if unit.setting == "inertia":
            return run_inertia(config, unit.arm, unit.seed, env.device)
        return run_digits(config, unit.arm, unit.seed, env.device)

    def claim(self, config: SoftEquivarianceConfig) -> Claim:
        return Claim(
            statement="On modified inertia, PER with auto-tuned strengths has lower test MSE "
            "than the MLP (paper Table 1: PER below MLP; metric log10 MSE, margin 0 as the "
            "catalog's claim states 'below').",
            metric="log10_test_mse", setting="inertia", method="per_auto", baseline="mlp",
            margin=0.0, higher_is_better=False)

    def secondary_claims(self, config: SoftEquivarianceConfig) -> list[Claim]:
        claims = []
        if "inertia" in config.settings:
            claims += [
                Claim(statement="Auto-tuning discovers the exact symmetry: λ_O2z ends at least "
                      "10× above max(λ_O2x, λ_O2y) (effect = log10 gap vs the fixed arm's 0; "
                      "margin 1 decade, paper Fig. 3 shows gaps of decades).",
                      metric="log10_lambda_gap", setting="inertia", method="per_auto",
                      baseline="per_fixed", margin=1.0),
                Claim(statement="Auto strengths beat fixed equal strengths on test MSE (paper: "
                      "PER auto < PER fixed; log10 MSE, margin 0).",
                      metric="log10_test_mse", setting="inertia", method="per_auto",
                      baseline="per_fixed", margin=0.0, higher_is_better=False),
                Claim(statement="PER beats the misspecified hard O(3)-equivariant model (paper "
                      "Table 1: EMLP(O(3)) worst on mixed symmetry; log10 MSE, margin 0).",
                      metric="log10_test_mse", setting="inertia", method="per_auto",
                      baseline="emlp_o3", margin=0.0, higher_is_better=False),
            ]
        if "digits_d4" in config.settings:
            claims += [
                Claim(statement="Digits/D4: λ of the exact symmetry (h-flip) ends at least 10× "
                      "above max(λ_C4, λ_vflip) (log10 gap vs fixed arm's 0, margin 1).",
                      metric="log10_lambda_gap", setting="digits_d4", method="per_auto",
                      baseline="per_fixed", margin=1.0),
                Claim(statement="Digits/D4, 200 examples: PER auto has lower test MSE than the "
                      "unregularised network (log10 MSE, margin 0).",
                      metric="log10_test_mse", setting="digits_d4", method="per_auto",
                      baseline="mlp", margin=0.0, higher_is_better=False),
            ]
        return claims

    def timing(self, config: SoftEquivarianceConfig, device: torch.device) -> dict[str, Any]:
        x, y = modified_inertia(config.batch_size, seed=0)
        x, y = lift_inertia_inputs(x).to(device), y.to(device)
        steps = {}
        for arm in ("unreg", "per_fixed", "emlp_o3"):
            torch.manual_seed(0)
            model, penalty = build_inertia_arm(config, arm)
            model.to(device)
            if penalty is not None:
                penalty.to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

            def step(model: nn.Module = model, penalty: Any = penalty,
                     optimizer: Any = optimizer) -> None:
                loss = F.mse_loss(model(x), y)
                if penalty is not None:
                    loss = loss + penalty()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            steps[arm] = step
        seconds = time_steps(steps, repeats=10, inner=3, device=device)
        return {"plain_step_seconds": seconds["unreg"],
                "per_over_plain": seconds["per_fixed"] / seconds["unreg"],
                "hard_projection_over_plain": seconds["emlp_o3"] / seconds["unreg"]}

    def note(self, config: SoftEquivarianceConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        parts = []
        for setting, types in (("inertia", TYPES_A), ("digits_d4", TYPES_B)):
            arms = aggregate.get(setting)
            if not arms:
                continue
            mses = ", ".join(f"{self.arm_labels[a]} {v['test_mse']['mean']:.4g} ± "
                             f"{v['test_mse']['se']:.2g}" for a, v in arms.items()
                             if "test_mse" in v)
            parts.append(f"{setting}: test MSE (mean ± SE) {mses}.")
            auto = arms.get("per_auto", {})
            lams = ", ".join(f"λ_{t} {auto[f'lambda_{t}']['mean']:.3g}" for t in types
                             if f"lambda_{t}" in auto)
            if lams:
                parts.append(f"Auto-tuned strengths after the rescaling (means): {lams}.")
            gaps = auto.get("log10_lambda_gap", {}).get("values", [])
            if gaps:
                top = "O(2)_z" if setting == "inertia" else "h-flip"
                parts.append(f"The exact type ({top}) kept the largest λ in "
                             f"{sum(g > 0 for g in gaps)} of {len(gaps)} seeds; per-seed log10 "
                             f"gaps {', '.join(f'{g:.2f}' for g in gaps)}.")
            hard = arms.get("emlp_o3", {}).get("test_mse", {}).get("values", [])
            if hard:
                parts.append("Hard O(3) per seed: " + ", ".join(f"{v:.3g}" for v in hard)
                             + " (test MSE; values far above the MLP's are unstable runs, cause "
                             "not investigated; in the others the O(3)-equivariant part of the "
                             "target dominates at this training length).")
        inertia = aggregate.get("inertia", {})
        plain = [inertia.get(a, {}).get("log10_test_mse", {}).get("mean")
                 for a in ("per_auto_plain", "mlp_plain")]
        if None not in plain:
            parts.append(f"Tier A trains under config.recipe = {config.recipe!r}; under the "
                         "earlier plain recipe (constant lr, decay on every parameter, no gated "
                         "residual path) PER auto − MLP in log10 test MSE is "
                         f"{plain[0] - plain[1]:+.3f} (mean).")
        parts.append("Network, epochs and data sizes are far below the paper's (8000 epochs, "
                     "EMLP bilinear layers, ch 128, N 1024); only relative effects are checked. "
                     "O(3) starts at λ = 0 (official default: the largest group is not "
                     "regularised), so its discovered λ is 0 by construction. Learning rates and "
                     "adjust_at were chosen on seed 0 (see the module docstring); the committed "
                     "run uses seeds 1–5.")
        return " ".join(parts)


REPRODUCTION = SoftEquivarianceReproduction()
