"""Projection-based Equivariance Regularizer (PER): soft equivariance under mixed symmetries.

Paper: Kim, Lee, Yang, Lee, "Regularizing Towards Soft Equivariance Under Mixed Symmetries",
ICML 2023, arXiv 2306.00356 (official code: github.com/kim-hyunsu/PER).

Method in three lines: an ordinary network whose every linear layer ``W_ℓ: V_in → V_out`` is
penalised, for each candidate symmetry type ``G``, by its squared distance to the subspace of
``G``-equivariant maps; the distance is exact and data-free because it uses the orthogonal
projector ``P^G`` onto that subspace. Each type's strength ``λ_G`` is rescaled once during training
by how small its penalty could be made, so the symmetry the data obeys keeps the largest strength.

Equations (paper §4, "PER"; official ``equiv_regularizer`` with loss type "mse"):

* projector (paper §4.1): ``P^G_W`` is the orthogonal projector onto
  ``{W : ρ_out(g) W ρ_in(g)^{-1} = W ∀ g ∈ G}``, the null space of the stacked constraints
  ``dρ_out(A) ⊗ I − I ⊗ dρ_in(A)ᵀ`` (Lie-algebra generators ``A``) and
  ``ρ_out(h) ⊗ ρ_in(h)^{-ᵀ} − I`` (discrete generators ``h``), with ``vec`` row-major. For a
  finite group acting by permutations it equals the Reynolds average
  ``P(W) = |G|^{-1} Σ_g ρ_out(g) W ρ_in(g)^{-1}``. ``P^G_b`` projects a bias onto the
  ``G``-invariant vectors of ``V_out``.
* penalty per type (paper eq. 6): ``R_G(θ) = Σ_ℓ ½‖W_ℓ − P^G_W W_ℓ‖² + ½‖b_ℓ − P^G_b b_ℓ‖²``.
* objective: ``L(θ) = MSE + Σ_G λ_G R_G(θ)`` (+ weight decay, the user's optimiser business).
* automatic strengths (paper §4.2, official ``AdjustEquiv``): during epochs
  ``(adjust_at − window, adjust_at]`` record the per-type penalties ``r_G`` at each epoch end;
  the first ``warmup`` records are skipped; keep the running minimum *vector* (replaced whole
  whenever any entry improves). At epoch ``adjust_at``, once:
  ``λ_G ← λ_G / (r_G / r_min)^p`` with ``r_min = min_{G: λ_G ≠ 0} r_G``.

Defaults (modified-inertia experiment, official ``train_softemlp_checkpoint.py`` and the paper's
appendix): initial strengths ``λ_{G_1} = 0`` for the first (largest) candidate and 100 for the
others; ``adjust_at`` 2000 epochs of 8000; ``power`` 2; ``window`` 100; ``warmup`` 50; biases
regularised (the ``--no_bias_regular`` flag is ``bias=False`` here).

Projectors are built here per block. For tensor representations (sums of ``T_k`` channels of
the 3-d defining representation, :class:`TensorRep`) the projector of a layer is
block-diagonal: ``Hom_G(m_a T_a, m_b T_b) = R^{m_b × m_a} ⊗ Hom_G(T_a, T_b)``, so one small
``3^{a+b}``-square projector per pair of tensor orders (computed once by an SVD null space) is
applied to every channel pair. The official code multiplies by the dense (or lazy)
``(#params)²`` projector of the whole layer; the block form gives the same matrix in
``O(#params · 3^{a+b})`` work and memory. For permutation representations
(:class:`PermutationLayerProjector`) the Reynolds average is a gather over the group's
elements. Cost per step: one projection per regularised layer per type, independent of the
batch size (``benchmarks/soft_equivariance.py`` measures it).

Differences from the official code: the network is the user's (the official SoftEMLP with
EMLP's bilinear layers and gates is one choice; ``regzoo.repro.soft_equivariance`` builds a
smaller one); the optional validation-time model search over projected networks
(``ModelSearch``) is :meth:`SoftEquivariance.project_` left to the caller.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.linalg
import torch
from torch import nn

from regzoo.core.checks import check_positive_int, check_range, check_real
from regzoo.registry import Default, register

DEFAULT_STRENGTH = 100.0
DEFAULT_ADJUST_AT = 2000
DEFAULT_POWER = 2.0
DEFAULT_WINDOW = 100
DEFAULT_WARMUP = 50


# --------------------------------------------------------------------------------------------
# Groups and their representations
# --------------------------------------------------------------------------------------------

def _as_square_stack(name: str, mats: Iterable[np.ndarray], dim: int | None) -> tuple[np.ndarray,
                                                                                     ...]:
    out = []
    for i, m in enumerate(mats):
        m = np.asarray(m, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1] or (dim is not None and m.shape[0] != dim):
            raise ValueError(f"{name}[{i}] must be a square {dim or 'd'}×{dim or 'd'} matrix, got "
                             f"shape {m.shape}")
        if not np.isfinite(m).all():
            raise ValueError(f"{name}[{i}] contains NaN or infinite values")
        out.append(m)
    return tuple(out)


@dataclass(frozen=True)
class MatrixGroup:
    """A matrix group given by generators of its defining representation on ``R^d``.

    ``lie`` holds Lie-algebra generators ``A`` (the identity component is ``exp(span A)``),
    ``discrete`` the group elements ``h`` that generate the other components. The group is
    everything these generate; it is the data the null-space projector needs (paper §4.1).
    """

    name: str
    dim: int
    lie: tuple[np.ndarray, ...] = ()
    discrete: tuple[np.ndarray, ...] = ()

    def __post_init__(self) -> None:
        check_positive_int("dim", self.dim)
        object.__setattr__(self, "lie", _as_square_stack("lie", self.lie, self.dim))
        object.__setattr__(self, "discrete", _as_square_stack("discrete", self.discrete,
                                                              self.dim))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A random element: ``exp(Σ c_i A_i)`` times a random word in the discrete generators."""
        g = np.eye(self.dim)
        if self.lie:
            g = scipy.linalg.expm(sum(rng.normal() * a for a in self.lie))
        for h in self.discrete:
            if rng.random() < 0.5:
                g = g @ h
        return g


def _rotation_generator(axis: int) -> np.ndarray:
    """The infinitesimal rotation about coordinate axis ``axis`` of ``R^3``."""
    i, j = [a for a in range(3) if a != axis]
    gen = np.zeros((3, 3))
    gen[i, j], gen[j, i] = -1.0, 1.0
    return gen


def O3() -> MatrixGroup:
    """O(3): rotations generated by ``L_x, L_y, L_z`` and the inversion ``−I``."""
    return MatrixGroup("O3", 3, tuple(_rotation_generator(a) for a in range(3)), (-np.eye(3),))


def SO3() -> MatrixGroup:
    """SO(3): rotations only."""
    return MatrixGroup("SO3", 3, tuple(_rotation_generator(a) for a in range(3)))


def _check_axis(axis: object) -> int:
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0 (x), 1 (y) or 2 (z), got {axis!r}")
    return int(axis)  # type: ignore[arg-type]


def O2(axis: int = 2) -> MatrixGroup:
    """O(2) about coordinate ``axis``: ``{R ∈ O(3) : R e_axis = e_axis}``.

    Generated by the rotation ``L_axis`` and the reflection that flips the next coordinate
    (``diag(−1, 1, 1)`` for ``axis = 2``), which fixes ``e_axis``.
    """
    axis = _check_axis(axis)
    flip = np.eye(3)
    flip[(axis + 1) % 3, (axis + 1) % 3] = -1.0
    return MatrixGroup(f"O2_{'xyz'[axis]}", 3, (_rotation_generator(axis),), (flip,))


def SO2(axis: int = 2) -> MatrixGroup:
    """SO(2) about coordinate ``axis`` (rotations only)."""
    axis = _check_axis(axis)
    return MatrixGroup(f"SO2_{'xyz'[axis]}", 3, (_rotation_generator(axis),))


def tensor_power(g: np.ndarray, order: int) -> np.ndarray:
    """``ρ_k(g) = g^{⊗k}`` (``k = 0``: the 1×1 identity)."""
    out = np.ones((1, 1))
    for _ in range(order):
        out = np.kron(out, g)
    return out


def tensor_lie(a: np.ndarray, order: int) -> np.ndarray:
    """``dρ_k(A) = Σ_i I ⊗ … ⊗ A ⊗ … ⊗ I`` (A in slot i); zero for ``k = 0``."""
    d = a.shape[0]
    out = np.zeros((d**order, d**order))
    for slot in range(order):
        term = np.ones((1, 1))
        for i in range(order):
            term = np.kron(term, a if i == slot else np.eye(d))
        out += term
    return out


def equivariant_projector(
    lie_in: Sequence[np.ndarray],
    lie_out: Sequence[np.ndarray],
    discrete_in: Sequence[np.ndarray],
    discrete_out: Sequence[np.ndarray],
    *,
    tol: float = 1e-9,
) -> np.ndarray:
    """Orthogonal projector onto ``vec`` (row-major) of the equivariant maps ``V_in → V_out``.

    The constraints ``dρ_out(A) W − W dρ_in(A) = 0`` and ``ρ_out(h) W ρ_in(h)^{-1} − W = 0``
    (paper §4.1) are stacked as ``dρ_out(A) ⊗ I − I ⊗ dρ_in(A)ᵀ`` and
    ``ρ_out(h) ⊗ ρ_in(h)^{-ᵀ} − I``; with ``Q`` an orthonormal basis of their null space (SVD),
    ``P = Q Qᵀ``. Representations are given by the images of the same generators in ``V_in``
    and ``V_out`` (lists of equal length).
    """
    if len(lie_in) != len(lie_out) or len(discrete_in) != len(discrete_out):
        raise ValueError("lie_in/lie_out and discrete_in/discrete_out must pair the same "
                         f"generators, got lengths {len(lie_in)}/{len(lie_out)} and "
                         f"{len(discrete_in)}/{len(discrete_out)}")
    mats = [np.asarray(m, dtype=np.float64) for m in (*lie_in, *discrete_in)]
    mats_out = [np.asarray(m, dtype=np.float64) for m in (*lie_out, *discrete_out)]
    if not mats:
        raise ValueError("no generators given: the group is trivial; every map is equivariant")
    n_in, n_out = mats[0].shape[0], mats_out[0].shape[0]
    eye_in, eye_out = np.eye(n_in), np.eye(n_out)
    rows = [np.kron(b, eye_in) - np.kron(eye_out, a.T) for a, b in zip(lie_in, lie_out)]
    rows += [np.kron(b, np.linalg.inv(a).T) - np.eye(n_in * n_out)
             for a, b in zip(discrete_in, discrete_out)]
    basis = scipy.linalg.null_space(np.concatenate(rows, axis=0), rcond=tol)
    return basis @ basis.T


# --------------------------------------------------------------------------------------------
# Layer projectors
# --------------------------------------------------------------------------------------------

class LayerProjector(Protocol):
    """What :class:`SoftEquivariance` needs of one layer's projector for one group."""

    def project_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``P_W W`` for a weight of shape ``(dim V_out, dim V_in)``."""

    def project_bias(self, bias: torch.Tensor) -> torch.Tensor:
        """``P_b b`` for a bias of shape ``(dim V_out,)``."""

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P_W, P_b)`` as sparse float64 matrices over row-major ``vec W`` and ``b``."""


def _cast(cache: dict[tuple[torch.dtype, torch.device], torch.Tensor], matrix: torch.Tensor,
          like: torch.Tensor) -> torch.Tensor:
    """``matrix`` as CSR in ``like``'s dtype and device, converted once and cached."""
    key = (like.dtype, like.device)
    if key not in cache:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul is all we use
            warnings.simplefilter("ignore", UserWarning)
            cache[key] = matrix.to(device=like.device, dtype=like.dtype).to_sparse_csr()
    return cache[key]


@dataclass(frozen=True)
class TensorRep:
    """A sum of tensor representations ``⊕_k m_k T_k`` of a 3-d matrix group (EMLP's reps).

    ``multiplicities[k]`` is the number of order-``k`` channels. Coordinates are laid out by
    order (all ``T_0`` channels, then ``T_1``, ...), each channel's ``3^k`` components
    contiguous and row-major.
    """

    multiplicities: tuple[int, ...]

    def __post_init__(self) -> None:
        m = tuple(self.multiplicities)
        if not m or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in m) \
                or sum(m) == 0:
            raise ValueError("multiplicities must be non-negative ints, not all zero, e.g. "
                             f"(16, 8, 4) for 16 T0 + 8 T1 + 4 T2; got {self.multiplicities!r}")
        object.__setattr__(self, "multiplicities", m)

    @property
    def dim(self) -> int:
        """``Σ_k m_k 3^k``."""
        return sum(m * 3**k for k, m in enumerate(self.multiplicities))

    def blocks(self) -> list[tuple[int, int, slice]]:
        """``(order, multiplicity, coordinate slice)`` of every non-empty order."""
        out, start = [], 0
        for k, m in enumerate(self.multiplicities):
            if m:
                out.append((k, m, slice(start, start + m * 3**k)))
                start += m * 3**k
        return out

    def rho(self, g: np.ndarray) -> np.ndarray:
        """The representation matrix of ``g`` (block-diagonal ``I_{m_k} ⊗ g^{⊗k}``)."""
        return scipy.linalg.block_diag(*[np.kron(np.eye(m), tensor_power(g, k))
                                         for k, m, _ in self.blocks()])


_ORDER_PROJECTORS: dict[tuple[bytes, ...], np.ndarray] = {}


def _order_projector(group: MatrixGroup, order_in: int, order_out: int) -> np.ndarray:
    """``P^G`` on ``Hom(T_in, T_out)``, cached by the generators' values (one SVD per process)."""
    key = (bytes([order_in, order_out]), *(m.tobytes() for m in group.lie), b"|",
           *(m.tobytes() for m in group.discrete))
    if key not in _ORDER_PROJECTORS:
        _ORDER_PROJECTORS[key] = equivariant_projector(
            [tensor_lie(a, order_in) for a in group.lie],
            [tensor_lie(a, order_out) for a in group.lie],
            [tensor_power(h, order_in) for h in group.discrete],
            [tensor_power(h, order_out) for h in group.discrete])
    return _ORDER_PROJECTORS[key]


class TensorLayerProjector(nn.Module):
    """``P^G`` of a linear layer ``rep_in → rep_out`` between :class:`TensorRep` s.

    ``Hom_G(m_a T_a, m_b T_b) = R^{m_b × m_a} ⊗ Hom_G(T_a, T_b)``: one projector per pair of
    orders (``3^{a+b}``-square, from :func:`equivariant_projector`) acts on every channel pair of
    that block. The layer projector, their direct sum, is stored as one sparse matrix over
    ``vec W`` (``Σ_blocks m_a m_b 9^{a+b}`` non-zeros instead of the dense ``(#params)²``), so
    a projection is one sparse product.
    """

    def __init__(self, rep_in: TensorRep, rep_out: TensorRep, group: MatrixGroup) -> None:
        super().__init__()
        if group.dim != 3:
            raise ValueError(f"group must act on R^3 for tensor representations, got dim "
                             f"{group.dim}")
        self.rep_in, self.rep_out, self.group_name = rep_in, rep_out, group.name
        n_in = rep_in.dim
        rows, cols, vals = [], [], []
        for b, mb, sb in rep_out.blocks():
            for a, ma, sa in rep_in.blocks():
                proj = _order_projector(group, a, b)
                db, da = 3**b, 3**a
                # Flat index of W[sb.start + i·db + p, sa.start + j·da + q], ordered as
                # (i, j, p·da + q) so the last axis is vec of the (db × da) block, row-major.
                r = sb.start + np.arange(mb)[:, None, None, None] * db \
                    + np.arange(db)[None, None, :, None]
                c = sa.start + np.arange(ma)[None, :, None, None] * da \
                    + np.arange(da)[None, None, None, :]
                flat = (r * n_in + c).reshape(mb, ma, db * da)
                keep = np.abs(proj) > 1e-12
                pi, pj = np.nonzero(keep)
                rows.append(flat[:, :, pi].reshape(-1))
                cols.append(flat[:, :, pj].reshape(-1))
                vals.append(np.broadcast_to(proj[pi, pj], (mb, ma, pi.size)).reshape(-1))
        self.register_buffer("matrix", _sparse(rows, cols, vals, rep_out.dim * n_in),
                             persistent=False)
        brow, bval = [], []
        for b, mb, sb in rep_out.blocks():
            proj = _order_projector(group, 0, b)
            idx = sb.start + np.arange(mb)[:, None] * 3**b + np.arange(3**b)[None, :]
            pi, pj = np.nonzero(np.abs(proj) > 1e-12)
            brow.append((idx[:, pi].reshape(-1), idx[:, pj].reshape(-1)))
            bval.append(np.broadcast_to(proj[pi, pj], (mb, pi.size)).reshape(-1))
        self.register_buffer("bias_matrix", _sparse([r for r, _ in brow], [c for _, c in brow],
                                                    bval, rep_out.dim), persistent=False)
        self._cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        self._bias_cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P_W, P_b)``, sparse float64."""
        return self.matrix, self.bias_matrix

    def project_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``P_W vec W``, reshaped back to ``W``'s shape."""
        if weight.shape != (self.rep_out.dim, self.rep_in.dim):
            raise ValueError(f"weight must have shape {(self.rep_out.dim, self.rep_in.dim)} for "
                             f"{self.rep_in} → {self.rep_out}, got {tuple(weight.shape)}")
        matrix = _cast(self._cache, self.matrix, weight)
        return (matrix @ weight.reshape(-1, 1)).reshape(weight.shape)

    def project_bias(self, bias: torch.Tensor) -> torch.Tensor:
        """``P_b b``: the ``G``-invariant part of each channel."""
        if bias.shape != (self.rep_out.dim,):
            raise ValueError(f"bias must have shape {(self.rep_out.dim,)}, got "
                             f"{tuple(bias.shape)}")
        return (_cast(self._bias_cache, self.bias_matrix, bias) @ bias[:, None])[:, 0]


def _sparse(rows: list[np.ndarray], cols: list[np.ndarray], vals: list[np.ndarray],
            n: int) -> torch.Tensor:
    index = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
    values = torch.from_numpy(np.concatenate(vals).astype(np.float64))
    return torch.sparse_coo_tensor(index, values, (n, n), check_invariants=True).coalesce()


def _group_closure(generators: Sequence[np.ndarray], limit: int = 100_000) -> np.ndarray:
    """All elements of the permutation group generated by ``generators`` (rows of indices)."""
    n = generators[0].shape[0]
    identity = np.arange(n)
    seen = {identity.tobytes(): identity}
    frontier = [identity]
    while frontier:
        new = []
        for p in frontier:
            for g in generators:
                q = g[p]  # composition: apply p, then g
                key = q.tobytes()
                if key not in seen:
                    seen[key] = q
                    new.append(q)
                    if len(seen) > limit:
                        raise ValueError(f"the generated group has more than {limit} elements; "
                                         "Reynolds averaging needs a small finite group")
        frontier = new
    return np.stack(list(seen.values()))


def _check_permutations(name: str, perms: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    arr = np.asarray(perms)
    if arr.ndim != 2 or arr.shape[0] == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty (n_generators, n) integer array of "
                         f"permutations, got shape {arr.shape} dtype {arr.dtype}")
    for i, p in enumerate(arr):
        if not np.array_equal(np.sort(p), np.arange(arr.shape[1])):
            raise ValueError(f"{name}[{i}] is not a permutation of 0..{arr.shape[1] - 1}")
    return arr.astype(np.int64)


class PermutationLayerProjector(nn.Module):
    """Reynolds projector of a finite group acting on ``V_in`` and ``V_out`` by permutations.

    ``perms_in[i]`` and ``perms_out[i]`` are the same generator ``h_i`` acting on coordinates:
    ``(ρ(h) x)[π(j)] = x[j]``. The group is closed under composition here, then
    ``P(W) = |G|^{-1} Σ_g ρ_out(g) W ρ_in(g)^{-1}``, i.e. ``W[π_out^{-1}(i), π_in^{-1}(j)]``
    averaged over ``g`` (paper §4.1 for finite groups; equal to the null-space projector).
    """

    def __init__(self, perms_in: Sequence[Sequence[int]] | np.ndarray,
                 perms_out: Sequence[Sequence[int]] | np.ndarray, name: str = "") -> None:
        super().__init__()
        pin = _check_permutations("perms_in", perms_in)
        pout = _check_permutations("perms_out", perms_out)
        if pin.shape[0] != pout.shape[0]:
            raise ValueError(f"perms_in and perms_out must list the same generators, got "
                             f"{pin.shape[0]} and {pout.shape[0]}")
        self.group_name = name
        n_in, n_out = pin.shape[1], pout.shape[1]
        # Close the group on the joint action so both sides enumerate the same elements.
        joint = _group_closure([np.concatenate([a, b + n_in]) for a, b in zip(pin, pout)])
        inverse = np.argsort(joint, axis=1)
        self.register_buffer("inv_in", torch.from_numpy(inverse[:, :n_in].copy()),
                             persistent=False)
        self.register_buffer("inv_out", torch.from_numpy(inverse[:, n_in:] - n_in),
                             persistent=False)
        self.n_in, self.n_out = n_in, n_out

    @property
    def order(self) -> int:
        """``|G|``."""
        return int(self.inv_in.shape[0])

    def project_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``|G|^{-1} Σ_g W[π_out(g)^{-1}, π_in(g)^{-1}]``."""
        if weight.shape != (self.n_out, self.n_in):
            raise ValueError(f"weight must have shape {(self.n_out, self.n_in)}, got "
                             f"{tuple(weight.shape)}")
        flat = (self.inv_out[:, :, None] * self.n_in + self.inv_in[:, None, :])
        return weight.reshape(-1)[flat].mean(0)

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P_W, P_b)``, sparse float64 (entries ``1/|G|`` summed over the group)."""
        flat = (self.inv_out[:, :, None] * self.n_in + self.inv_in[:, None, :]).reshape(
            self.order, -1)
        rows = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
        n_w = self.n_out * self.n_in
        weight = torch.sparse_coo_tensor(torch.stack([rows.reshape(-1), flat.reshape(-1)]),
                                         torch.full((flat.numel(),), 1.0 / self.order,
                                                    dtype=torch.float64), (n_w, n_w),
                                         check_invariants=True)
        brows = torch.arange(self.n_out, device=self.inv_out.device).expand_as(self.inv_out)
        bias = torch.sparse_coo_tensor(torch.stack([brows.reshape(-1), self.inv_out.reshape(-1)]),
                                       torch.full((self.inv_out.numel(),), 1.0 / self.order,
                                                  dtype=torch.float64), (self.n_out, self.n_out),
                                       check_invariants=True)
        return weight.coalesce(), bias.coalesce()

    def project_bias(self, bias: torch.Tensor) -> torch.Tensor:
        """``|G|^{-1} Σ_g b[π_out(g)^{-1}]``."""
        if bias.shape != (self.n_out,):
            raise ValueError(f"bias must have shape {(self.n_out,)}, got {tuple(bias.shape)}")
        return bias[self.inv_out].mean(0)


# --------------------------------------------------------------------------------------------
# The penalty and the strength rule
# --------------------------------------------------------------------------------------------

def adjust_strengths(strengths: torch.Tensor, penalties: torch.Tensor,
                     power: float = DEFAULT_POWER) -> torch.Tensor:
    """The one-shot rule ``λ_G ← λ_G / (r_G / r_min)^p``, ``r_min`` over types with ``λ ≠ 0``.

    Official ``AdjustEquiv.adjust``; types with ``λ = 0`` stay 0. ``r_G = r_min`` (including
    ``0/0``) keeps ``λ_G``; ``r_min = 0 < r_G`` sends ``λ_G`` to 0.
    """
    if strengths.shape != penalties.shape or strengths.ndim != 1:
        raise ValueError(f"strengths and penalties must be 1-d of equal length, got shapes "
                         f"{tuple(strengths.shape)} and {tuple(penalties.shape)}")
    if bool((penalties < 0).any()) or not bool(torch.isfinite(penalties).all()):
        raise ValueError(f"penalties must be finite and non-negative, got {penalties.tolist()}")
    active = strengths != 0
    if not bool(active.any()):
        return strengths.clone()
    r_min = penalties[active].min()
    ratio = torch.where(penalties == r_min, torch.ones_like(penalties), penalties / r_min)
    return torch.where(active, strengths / ratio.pow(power), strengths)


def _linear_layers(layers: Sequence[nn.Module] | nn.Module) -> list[nn.Module]:
    items = [layers] if isinstance(layers, nn.Module) and hasattr(layers, "weight") else \
        list(layers)
    if not items:
        raise ValueError("layers is empty; pass the linear layers to regularise")
    for i, layer in enumerate(items):
        w = getattr(layer, "weight", None)
        if not isinstance(w, torch.Tensor) or w.ndim != 2:
            raise TypeError(f"layers[{i}] must have a 2-d .weight (an nn.Linear), got "
                            f"{type(layer).__name__}")
    return items


@register(
    "soft_equivariance",
    kind="penalty",
    declares={
        "not_on_a_classifier": "PER penalises the equivariance error of its own tensor network's "
            "layers (a regression model with group projectors)",
    },
    summary="Per-type squared distance of every linear layer to its G-equivariant subspace "
            "(exact orthogonal projectors), with strengths rescaled once by how small each "
            "penalty could be made.",
    equation="R_G = Σ_ℓ ½‖W_ℓ − P^G W_ℓ‖² + ½‖b_ℓ − P^G b_ℓ‖²;  loss + Σ_G λ_G R_G;  "
             "at adjust_at: λ_G ← λ_G (r_min / r_G)^p",
    defaults=(
        Default("strength", DEFAULT_STRENGTH, "official train_softemlp_checkpoint.py "
                "--init_equiv for inertia (first group 0)"),
        Default("adjust_at", None, f"None: fixed strengths; the official inertia runs rescale "
                f"once at epoch {DEFAULT_ADJUST_AT} of 8000 (--adjust_equiv_at)"),
        Default("power", DEFAULT_POWER, "official --adjust_exp for inertia/cossim"),
        Default("window", DEFAULT_WINDOW, "official: record from adjust_at − 100"),
        Default("warmup", DEFAULT_WARMUP, "official AdjustEquiv.warmup"),
        Default("bias", True, "official default (bias regularised unless --no_bias_regular)"),
    ),
    variants=("fixed strengths (adjust_at=None)", "auto strengths (paper §4.2)",
              "tensor reps via null space (TensorLayerProjector)",
              "finite permutation groups via Reynolds (PermutationLayerProjector)"),
)
class SoftEquivariance(nn.Module):
    """PER: ``Σ_G λ_G R_G(θ)`` over the given layers, with optional automatic ``λ``.

    Args:
        layers: the linear layers to regularise (``.weight`` of shape ``(out, in)``, optional
            ``.bias``), in network order.
        projectors: ``{type name: [projector of layer 0, projector of layer 1, ...]}`` — one
            :class:`LayerProjector` per layer for each candidate symmetry type, in the order of
            the candidates (the first is the "largest" group of the paper).
        strengths: initial ``λ_G`` per type name; default: 0 for the first type and
            ``DEFAULT_STRENGTH`` for the others (official inertia setting).
        adjust_at: the epoch at which the strengths are rescaled once (paper §4.2); ``None``
            keeps them fixed.
        power: ``p`` of the rescaling rule.
        window: the number of epochs before ``adjust_at`` in which penalties are recorded.
        warmup: the number of first records that are skipped.
        bias: also regularise the biases.

    Call ``penalty()`` (or the module) for the weighted sum, ``values()`` for the per-type
    ``R_G`` with gradients, and ``set_epoch(e)`` at the start of every epoch ``e`` (``e``
    finished epochs; ``regzoo.compose.Objective`` does this) to run the strength rule.
    """

    needs_higher_order_grad = False
    batch_coupled = False

    def __init__(
        self,
        layers: Sequence[nn.Module] | nn.Module,
        projectors: Mapping[str, Sequence[LayerProjector]],
        strengths: Mapping[str, float] | None = None,
        *,
        adjust_at: int | None = None,
        power: float = DEFAULT_POWER,
        window: int = DEFAULT_WINDOW,
        warmup: int = DEFAULT_WARMUP,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.layers = _linear_layers(layers)
        if not isinstance(projectors, Mapping) or not projectors:
            raise ValueError("projectors must be a non-empty mapping {type name: [one projector "
                             "per layer]}")
        self.names = tuple(projectors)
        for name, projs in projectors.items():
            if len(projs) != len(self.layers):
                raise ValueError(f"projectors[{name!r}] has {len(projs)} projectors for "
                                 f"{len(self.layers)} layers; give one per layer")
            for i, (proj, layer) in enumerate(zip(projs, self.layers)):
                if not (hasattr(proj, "project_weight") and hasattr(proj, "project_bias")):
                    raise TypeError(f"projectors[{name!r}][{i}] must have project_weight and "
                                    f"project_bias, got {type(proj).__name__}")
                try:
                    proj.project_weight(layer.weight.detach())
                except ValueError as error:
                    raise ValueError(f"projectors[{name!r}][{i}] does not fit layers[{i}]: "
                                     f"{error}") from None
        self.projectors = nn.ModuleDict({n: nn.ModuleList(
            [p if isinstance(p, nn.Module) else _Wrapped(p) for p in projectors[n]])
            for n in self.names})
        if strengths is None:
            strengths = {n: 0.0 if i == 0 else DEFAULT_STRENGTH for i, n in enumerate(self.names)}
        if set(strengths) != set(self.names):
            raise ValueError(f"strengths must give one value per type {list(self.names)}, got "
                             f"keys {list(strengths)}")
        values = [check_range(f"strengths[{n!r}]", strengths[n], 0.0) for n in self.names]
        if adjust_at is not None:
            check_positive_int("adjust_at", adjust_at)
        self.adjust_at = adjust_at
        self.power = check_range("power", power, 0.0)
        self.window = check_positive_int("window", window)
        self.warmup = check_positive_int("warmup", warmup, minimum=0)
        if adjust_at is not None and self.warmup >= self.window:
            raise ValueError(f"warmup ({warmup}) must be smaller than window ({window}) or "
                             "no penalty is ever recorded before adjust_at")
        self.bias = bool(bias)
        self.register_buffer("strengths", torch.tensor(values, dtype=torch.float64))
        self.register_buffer("initial_strengths", self.strengths.clone())
        self.register_buffer("min_record", torch.full((len(self.names),), float("inf"),
                                                      dtype=torch.float64))
        self.register_buffer("records", torch.zeros((), dtype=torch.long))
        self.register_buffer("adjusted", torch.zeros((), dtype=torch.bool))
        self._n_theta = self._parameters_vector().numel()
        self._q_cache: tuple[tuple, torch.Tensor] | None = None

    def strength(self) -> dict[str, float]:
        """The current ``λ_G`` per type name."""
        return dict(zip(self.names, self.strengths.tolist()))

    def values(self) -> dict[str, torch.Tensor]:
        """``R_G(θ)`` per type (differentiable), summed over layers (paper eq. 6)."""
        return {name: self._value(name) for name in self.names}

    def _parameters_vector(self) -> torch.Tensor:
        parts = []
        for layer in self.layers:
            parts.append(layer.weight.reshape(-1))
            if self.bias and getattr(layer, "bias", None) is not None:
                parts.append(layer.bias)
        return torch.cat(parts)

    def _quadratic(self, like: torch.Tensor) -> torch.Tensor:
        """``Q = Σ_G λ_G (I − P_G)`` over ``θ`` (block-diagonal over layers), cached per ``λ``.

        Since ``I − P_G`` is an orthogonal projector, ``Σ_G λ_G R_G = ½ θᵀ Q θ``: one sparse
        product per step for all types and layers.
        """
        key = (tuple(self.strengths.tolist()), like.dtype, like.device)
        if self._q_cache is None or self._q_cache[0] != key:
            n = self._n_theta
            eye = torch.sparse_coo_tensor(torch.arange(n).expand(2, n),
                                          torch.ones(n, dtype=torch.float64), (n, n),
                                          check_invariants=True)
            q = eye * float(self.strengths.sum())
            for lam, name in zip(self.strengths.tolist(), self.names):
                if lam != 0.0:
                    q = q - lam * self._type_matrix(name)
            self._q_cache = (key, _cast({}, q.coalesce(), like))
        return self._q_cache[1]

    def _type_matrix(self, name: str) -> torch.Tensor:
        """Block-diagonal ``P_G`` over ``θ = (vec W_1, b_1, vec W_2, ...)``, sparse float64."""
        rows, cols, vals, offset = [], [], [], 0
        for proj, layer in zip(self.projectors[name], self.layers):
            pw, pb = proj.matrices()
            mats = [pw]
            if self.bias and getattr(layer, "bias", None) is not None:
                mats.append(pb)
            for m in mats:
                m = m.coalesce()
                idx = m.indices().cpu()
                rows.append(idx[0] + offset)
                cols.append(idx[1] + offset)
                vals.append(m.values().cpu().double())
                offset += m.shape[0]
        n = self._n_theta
        return torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]),
                                       torch.cat(vals), (n, n), check_invariants=True)

    def forward(self) -> torch.Tensor:
        """``Σ_G λ_G R_G(θ) = ½ θᵀ Q θ`` (see :meth:`_quadratic`)."""
        theta = self._parameters_vector()
        return 0.5 * (theta * (self._quadratic(theta) @ theta[:, None])[:, 0]).sum()

    penalty = forward

    def _value(self, name: str) -> torch.Tensor:
        total = None
        for proj, layer in zip(self.projectors[name], self.layers):
            w = layer.weight
            term = 0.5 * (w - proj.project_weight(w)).square().sum()
            b = getattr(layer, "bias", None)
            if self.bias and b is not None:
                term = term + 0.5 * (b - proj.project_bias(b)).square().sum()
            total = term if total is None else total + term
        return total

    @torch.no_grad()
    def set_epoch(self, epoch: int) -> None:
        """Record the penalties at the end of epoch ``epoch − 1`` and adjust at ``adjust_at``.

        Mirrors the official loop (0-based epoch ``e`` ends; ``e + 1`` is ``epoch`` here):
        record when ``adjust_at − window < epoch ≤ adjust_at``, skipping the first ``warmup``
        records; rescale once when ``epoch == adjust_at``.
        """
        check_positive_int("epoch", epoch, minimum=0)
        if self.adjust_at is None or bool(self.adjusted):
            return
        if self.adjust_at - self.window < epoch <= self.adjust_at:
            self.observe(torch.stack([v.detach().double() for v in self.values().values()]))
        if epoch == self.adjust_at:
            self.adjust()

    @torch.no_grad()
    def observe(self, penalties: torch.Tensor) -> None:
        """One record of the per-type penalties (official ``AdjustEquiv.update_rglr``)."""
        self.records += 1
        if int(self.records) <= self.warmup:
            return
        penalties = penalties.to(self.min_record)
        if bool((penalties < self.min_record).any()):
            self.min_record.copy_(penalties)

    @torch.no_grad()
    def adjust(self) -> None:
        """Apply :func:`adjust_strengths` to the recorded minimum (no-op before any record)."""
        if not bool(torch.isfinite(self.min_record).all()):
            return
        self.strengths.copy_(adjust_strengths(self.strengths, self.min_record, self.power))
        self.adjusted.fill_(True)

    @torch.no_grad()
    def project_(self, name: str) -> None:
        """Replace every layer's weight and bias by its projection for type ``name``.

        The network becomes exactly ``G``-equivariant (given equivariant nonlinearities); the
        official validation-time model search compares such projected networks.
        """
        if name not in self.names:
            raise ValueError(f"name must be one of {list(self.names)}, got {name!r}")
        for proj, layer in zip(self.projectors[name], self.layers):
            layer.weight.copy_(proj.project_weight(layer.weight))
            if getattr(layer, "bias", None) is not None:
                layer.bias.copy_(proj.project_bias(layer.bias))


class _Wrapped(nn.Module):
    """Holds a projector that is not an ``nn.Module`` so ``ModuleList`` accepts it."""

    def __init__(self, inner: LayerProjector) -> None:
        super().__init__()
        self.inner = inner

    def project_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return self.inner.project_weight(weight)

    def project_bias(self, bias: torch.Tensor) -> torch.Tensor:
        return self.inner.project_bias(bias)

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.matrices()


class ProjectedWeight(nn.Module):
    """Parametrisation ``W = P^G V`` (or ``b = P^G c``): a hard-equivariant layer (EMLP-like).

    Use with ``torch.nn.utils.parametrize.register_parametrization(layer, "weight",
    ProjectedWeight(projector))``; it is the ``λ_G → ∞`` limit of the penalty.
    """

    def __init__(self, projector: LayerProjector, which: str = "weight") -> None:
        super().__init__()
        if which not in ("weight", "bias"):
            raise ValueError(f"which must be 'weight' or 'bias', got {which!r}")
        self.projector = projector if isinstance(projector, nn.Module) else _Wrapped(projector)
        self.which = which

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        if self.which == "weight":
            return self.projector.project_weight(value)
        return self.projector.project_bias(value)


def make_hard_equivariant(layers: Sequence[nn.Module], projectors: Sequence[LayerProjector]
                          ) -> None:
    """Constrain ``layers`` to the equivariant subspace with :class:`ProjectedWeight`."""
    from torch.nn.utils import parametrize

    layers = _linear_layers(layers)
    if len(projectors) != len(layers):
        raise ValueError(f"projectors has {len(projectors)} entries for {len(layers)} layers")
    for layer, proj in zip(layers, projectors):
        with torch.no_grad():
            layer.weight.copy_(proj.project_weight(layer.weight))
        parametrize.register_parametrization(layer, "weight", ProjectedWeight(proj, "weight"))
        if getattr(layer, "bias", None) is not None:
            parametrize.register_parametrization(layer, "bias", ProjectedWeight(proj, "bias"))


# --------------------------------------------------------------------------------------------
# The paper's synthetic task
# --------------------------------------------------------------------------------------------

def modified_inertia(n: int, *, k: int = 5, noise: float = 0.3, axis: int = 2, seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's ModifiedInertia data (official ``experiments/datasets.py``).

    ``k`` point masses ``m_i = softplus(z_i)``, ``z_i ~ N(0, 1)``, at ``r_i ~ N(0, I_3)``;
    ``I = Σ_i m_i (|r_i|² I_3 − r_i r_iᵀ)`` and the target ``Y = I + noise · (I g) gᵀ`` with
    ``g = e_axis``: exactly ``O(2)_axis``-equivariant, ``O(3)``-equivariant only for
    ``noise = 0``. Inputs ``x = (m_1..m_k, r_1..r_k)`` (rep ``k T_0 ⊕ k T_1``), outputs the 9
    entries of ``Y`` row-major (rep ``T_2``).
    """
    check_positive_int("n", n)
    check_positive_int("k", k)
    noise = check_real("noise", noise)
    g = np.eye(3)[_check_axis(axis)]
    rng = torch.Generator().manual_seed(int(seed))
    x = torch.randn(n, 4 * k, generator=rng, dtype=torch.float64)
    x[:, :k] = torch.nn.functional.softplus(x[:, :k])
    m, r = x[:, :k], x[:, k:].reshape(n, k, 3)
    eye = torch.eye(3, dtype=torch.float64)
    inertia = (m[:, :, None, None] * ((r * r).sum(-1)[..., None, None] * eye
                                      - r[..., :, None] * r[..., None, :])).sum(1)
    gt = torch.from_numpy(g)
    y = inertia + noise * (inertia @ gt)[:, :, None] * gt[None, None, :]
    return x.to(dtype), y.reshape(n, 9).to(dtype)
