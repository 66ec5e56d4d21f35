"""Low-rank adapters: LoRA, PiSSA and SORSA initialisations of one layer.

Each wrapped weight becomes a frozen residual plus a trainable rank-r part,

    y = x W_resᵀ + s · ((x Aᵀ) ⊙ σ) Bᵀ + b,      A ∈ R^{r×in}, B ∈ R^{out×r}, σ ∈ R^r,

with s = alpha / r (1 when ``alpha`` is None). The initialisations:

- ``lora`` (Hu et al. 2021, and peft's default): A Kaiming-uniform(a=√5), B = 0, σ ≡ 1 fixed,
  W_res = W. The adapted model starts as the pretrained one.
- ``pissa`` (Meng et al. 2024, peft's ``init_lora_weights="pissa"``): thin SVD W = U Σ Vᵀ,
  A = diag(√(Σ_r/s)) V_rᵀ, B = U_r diag(√(Σ_r/s)), σ ≡ 1 fixed, W_res = W − s·B A: the principal
  part is trained, the minor part frozen; output unchanged.
- ``sorsa`` (Cao 2024, §3; official ``sorsa_init``): B = U_r, σ = Σ_r (a trainable vector),
  A = V_rᵀ, W_res = W − s·B diag(σ) A.

The SVD runs in float64 for float64 weights and in float32 otherwise; adapter parameters of a
half-precision base are kept in float32 (peft does the same), so small updates are not lost.

``init_svd="full"`` (default) is the exact thin SVD, O(out·in·min(out, in)) per layer. On large
layers ``init_svd="lowrank"`` is peft's ``init_lora_weights="pissa_niter_N"``: a randomised range
finder with ``svd_niter`` subspace iterations (Halko, Martinsson, Tropp 2011, Alg. 4.4) on a
Gaussian sketch of r columns, as peft's ``torch.svd_lowrank(W, q=r, niter=N)``, costing
O(out·in·r·(2·niter + 1)). Its sketch is drawn from the global CPU generator and then moved,
so a seed gives the same factors on any device. The top-r factors are then approximate; the
frozen residual is computed from them, so the adapted layer still starts equal to the base.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from regzoo.adapters.base import AdapterHandle, AdapterLayer, find_targets, wrap
from regzoo.core.checks import check_choice, check_positive_int, check_range

INITS = ("lora", "pissa", "sorsa")
SVDS = ("full", "lowrank")


def principal_svd(weight: torch.Tensor, rank: int, *, svd: str = "full", niter: int = 4
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-``rank`` singular triplets (U_r, Σ_r, V_rᵀ) of ``weight``, exact or randomised.

    ``svd="lowrank"``: Y = W Ω with Ω ∈ R^{in×r} standard normal (drawn on the CPU), then
    ``niter`` rounds of Q ← qr(W qr(Wᵀ Q)), and the SVD of the small r × in matrix Qᵀ W
    (module docstring).
    """
    check_choice("svd", svd, SVDS)
    if svd == "full":
        U, sigma, Vh = torch.linalg.svd(weight, full_matrices=False)
        return U[:, :rank], sigma[:rank], Vh[:rank]
    check_positive_int("niter", niter, minimum=0)
    sketch = torch.randn(weight.shape[1], rank, dtype=weight.dtype).to(weight.device)
    Q = torch.linalg.qr(weight @ sketch).Q
    for _ in range(niter):
        Q = torch.linalg.qr(weight @ torch.linalg.qr(weight.t() @ Q).Q).Q
    U_small, sigma, Vh = torch.linalg.svd(Q.t() @ weight, full_matrices=False)
    return Q @ U_small, sigma, Vh


class LowRankLinear(AdapterLayer):
    """One linear layer with a rank-``rank`` trainable part (see the module docstring)."""

    def __init__(self, base: nn.Module, rank: int, *, init: str = "lora",
                 alpha: float | None = None, dropout: float = 0.0, init_svd: str = "full",
                 svd_niter: int = 4) -> None:
        super().__init__(base)
        check_choice("init", init, INITS)
        check_choice("init_svd", init_svd, SVDS)
        check_positive_int("svd_niter", svd_niter, minimum=0)
        limit = min(self.in_features, self.out_features)
        check_positive_int("rank", rank)
        if rank > limit:
            raise ValueError(f"rank must be an integer in [1, min(in, out)] = [1, {limit}] for a "
                             f"{self.out_features}×{self.in_features} layer, got {rank!r}")
        if alpha is not None:
            check_range("alpha", alpha, 0.0, low_inclusive=False)
        check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.rank, self.init = rank, init
        self.scale = 1.0 if alpha is None else alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        weight = self.weight_matrix()
        dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
        like = {"dtype": dtype, "device": weight.device}
        self.A = nn.Parameter(torch.empty(rank, self.in_features, **like))
        self.B = nn.Parameter(torch.zeros(self.out_features, rank, **like))
        self.S: nn.Parameter | None = None
        if init == "lora":
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        else:
            self._init_from_svd(weight.detach().to(dtype), init_svd, svd_niter)

    def _init_from_svd(self, weight: torch.Tensor, init_svd: str, svd_niter: int) -> None:
        U, sigma, Vh = principal_svd(weight, self.rank, svd=init_svd, niter=svd_niter)
        with torch.no_grad():
            if self.init == "pissa":
                root = torch.sqrt(sigma / self.scale)
                self.A.copy_(root[:, None] * Vh)
                self.B.copy_(U * root)
            else:
                self.A.copy_(Vh)
                self.B.copy_(U)
                self.S = nn.Parameter(sigma.clone())
            self.set_weight_matrix(weight - self.delta_weight())

    def singular_values(self) -> torch.Tensor:
        """σ: the trainable vector under SORSA, ones otherwise."""
        return self.S if self.S is not None else self.A.new_ones(self.rank)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s · B diag(σ) A, shape (out, in)."""
        B = self.B * self.S if self.S is not None else self.B
        return self.scale * (B @ self.A)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The update s · ((dropout(x) Aᵀ) ⊙ σ) Bᵀ without forming ΔW: O(r (in + out)) a row."""
        hidden = self.dropout(x.to(self.A.dtype)) @ self.A.t()
        if self.S is not None:
            hidden = hidden * self.S
        out = hidden @ self.B.t()
        return out if self.scale == 1.0 else self.scale * out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, init={self.init}, scale={self.scale:g}"


class LowRankHandle(AdapterHandle):
    """Handle of :func:`apply_low_rank`; methods with a regulariser on the factors subclass it."""

    layers: dict[str, LowRankLinear]

    def factors(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(layer name, A, B, σ) of every adapted layer, as live parameters."""
        self._check_live()
        for name, layer in self.layers.items():
            yield name, layer.A, layer.B, layer.singular_values()


def low_rank_targets(model: nn.Module, target_modules: Sequence[str] | str | None, rank: int
                     ) -> list[tuple[str, nn.Module]]:
    """The layers a rank-``rank`` adapter wraps, every one checked before any is touched.

    A layer named in ``target_modules`` with min(in, out) < rank is an error; with
    ``target_modules=None`` such layers are skipped with a warning, since "every linear layer"
    cannot mean a rank the layer does not have.
    """
    check_positive_int("rank", rank)
    targets, small = [], []
    for name, module in find_targets(model, target_modules):
        shape = tuple(module.weight.shape)
        if rank <= min(shape):
            targets.append((name, module))
        elif target_modules is None:
            small.append(f"{name} {shape}")
        else:
            raise ValueError(f"rank must be an integer in [1, min(in, out)] = [1, {min(shape)}] "
                             f"for layer {name!r} of shape {shape}, got {rank}; lower rank or "
                             "leave that layer out of target_modules")
    if small:
        warnings.warn(f"rank {rank} exceeds the smaller side of {len(small)} layer(s), left "
                      f"unadapted: {', '.join(small)}; name target_modules to choose layers "
                      "yourself", stacklevel=3)
    if not targets:
        raise ValueError(f"no linear layer of {type(model).__name__} has min(in, out) >= "
                         f"rank={rank}; lower rank")
    return targets


def apply_low_rank(model: nn.Module, *, target_modules: Sequence[str] | str | None = None,
                   rank: int = 8, init: str = "lora", alpha: float | None = None,
                   dropout: float = 0.0, modules_to_save: Sequence[str] | str = (),
                   init_svd: str = "full", svd_niter: int = 4,
                   handle_cls: type[LowRankHandle] = LowRankHandle, **handle_kwargs
                   ) -> LowRankHandle:
    """Wrap the target linear layers of ``model`` in place with :class:`LowRankLinear`.

    Args:
        model: any ``nn.Module``; its other parameters are frozen (``modules_to_save`` excepted).
        target_modules: layer names (peft-style suffixes or globs); None = every linear layer
            whose min(in, out) is at least ``rank`` (smaller ones, a 10-class head under rank
            16 say, are skipped with a warning naming them).
        rank: r, at most min(in, out) of every named target.
        init: ``"lora"``, ``"pissa"`` or ``"sorsa"``.
        alpha: the scale is alpha / rank; None gives scale 1.
        dropout: dropout on the adapter's input (LoRA's ``lora_dropout``).
        modules_to_save: modules trained in full alongside (a new classifier head, say).
        init_svd: ``"full"`` (exact) or ``"lowrank"`` (randomised, peft's ``pissa_niter_N``)
            for the PiSSA and SORSA initialisations; ignored by LoRA.
        svd_niter: subspace iterations of ``init_svd="lowrank"`` (default 4, the PiSSA
            authors' ``pissa_niter_4``).
        handle_cls, handle_kwargs: a method's handle subclass and its options.

    Returns:
        The handle: ``trainable_parameters()``, ``merge()``, ``unmerge()``, ``remove()``,
        ``factors()``, ``adapter_state_dict()``.
    """
    check_choice("init_svd", init_svd, SVDS)
    check_positive_int("svd_niter", svd_niter, minimum=0)
    targets = low_rank_targets(model, target_modules, rank)
    return wrap(model, targets,
                lambda _name, module: LowRankLinear(module, rank, init=init, alpha=alpha,
                                                    dropout=dropout, init_svd=init_svd,
                                                    svd_niter=svd_niter),
                modules_to_save=modules_to_save, handle_cls=handle_cls, **handle_kwargs)
