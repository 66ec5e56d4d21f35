r"""Quantiser layers for discrete latent spaces: per-dimension scalar and cosine vector codebooks.

Two methods regularise a discrete latent space and share these layers:

- :class:`ScalarQuantizer` — QLAE (Hsu et al., "Disentanglement via Latent Quantization",
  NeurIPS 2023, arXiv 2305.18378, §3; official ``disentangle/latents/quantized.py``): latent
  dimension j has its own codebook V_j ∈ R^{n_v}, initialised ``linspace(−0.5, 0.5, n_v)``;
  z_q,j = V_j[argmin_m |z_c,j − V_j[m]|] (ties to the lower index), with the losses

  .. math::

      L_q = \operatorname{mean}_j (\operatorname{sg}(z_{c,j}) - z_{q,j})^2, \qquad
      L_c = \operatorname{mean}_j (z_{c,j} - \operatorname{sg}(z_{q,j}))^2,

  averaged over the batch; the first moves only the codebooks, the second only the encoder.
  ``shared=True`` is the paper's global-codebook ablation (one V for every dimension),
  ``trainable=False`` the frozen-values ablation.
- :class:`VectorQuantizer` — VQ with an l2-normalised (cosine) codebook as GigaTok (Xiong et
  al. 2025, arXiv 2504.08736; official ``vq_vit_model.py``, after LlamaGen): z and the K codes
  are unit vectors, the nearest code by cosine; L_q as above, L_c = β·mean(z − sg(z_q))², both
  element means (the official code), β = 0.25. ``metric="euclidean"`` is plain VQ-VAE (no
  normalisation, codes uniform in ±√(3/dim) as QLAE's ``vector_quantized.py``): QLAE's
  vector-quantisation ablation.

Gradient estimators (``estimator=``): ``"straight_through"`` (van den Oord et al. 2017),
ẑ = z + sg(z_q − z), so ∂ẑ/∂z = I; ``"rotation"`` (Fifty et al., "Restructuring Vector
Quantization with the Rotation Trick", 2024, eq. 4), ẑ = sg(λR)·z with R the rotation taking
z/‖z‖ to z_q/‖z_q‖ in their plane and λ = ‖z_q‖/‖z‖: the forward value is z_q and the
gradient reaches z through the fixed linear map λR (applied with two Householder-like rank-one
terms, R z = z − 2r(rᵀz) + 2q̂(ẑᵀz), r = (ẑ + q̂)/‖ẑ + q̂‖). GigaTok's configs use the rotation
trick; the scalar quantiser has a straight-through gradient only (rotating a scalar is the
identity up to sign).

:func:`codebook_usage` and :func:`perplexity` read an index tensor. Cost: one (N × K) distance
and an argmin per call (K = n_v per dimension for the scalar quantiser), negligible next to a
network's forward for K ≤ 16384 at small N; the vector quantiser computes distances in chunks
of ``chunk_size`` rows to bound memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ESTIMATORS = ("straight_through", "rotation")
METRICS = ("cosine", "euclidean")


@dataclass
class Quantized:
    """What a quantiser returns for a batch.

    ``z_hat`` goes to the decoder (value z_q, gradient per the estimator); ``z_q`` is the chosen
    codes (gradient to the codebook); ``indices`` the code index per vector (or per dimension);
    ``quantization_loss`` and ``commitment_loss`` are unweighted means (the vector quantiser's
    commitment loss already carries β).
    """

    z_hat: torch.Tensor
    z_q: torch.Tensor
    indices: torch.Tensor
    quantization_loss: torch.Tensor
    commitment_loss: torch.Tensor


def _check_latents(name: str, z: torch.Tensor, last_dim: int, what: str) -> None:
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got "
                        f"{type(z).__name__ if not isinstance(z, torch.Tensor) else z.dtype}")
    if z.ndim < 1 or z.shape[-1] != last_dim:
        raise ValueError(f"{name} must have {what} = {last_dim} in its last dimension, got shape "
                         f"{tuple(z.shape)}")
    if not bool(torch.isfinite(z.detach()).all()):
        raise ValueError(f"{name} contains NaN or infinite values; check the encoder's output")


class ScalarQuantizer(nn.Module):
    """QLAE's latent quantisation: one scalar codebook per latent dimension (module docstring).

    Args:
        num_latents: n_z, the size of the last dimension of the latents.
        num_values: n_v ≥ 2 values per codebook (10 in the paper).
        trainable: learn the codebook values (the paper) or keep them fixed (an ablation).
        shared: one codebook for every dimension (the global-codebook ablation).
        low, high: the initial linspace's ends (−0.5, 0.5 officially).
    """

    def __init__(self, num_latents: int, num_values: int = 10, *, trainable: bool = True,
                 shared: bool = False, low: float = -0.5, high: float = 0.5) -> None:
        super().__init__()
        if not isinstance(num_latents, int) or num_latents < 1:
            raise ValueError(f"num_latents must be a positive integer, got {num_latents!r}")
        if not isinstance(num_values, int) or num_values < 2:
            raise ValueError(f"num_values must be an integer ≥ 2 (a codebook needs two values to "
                             f"quantise to), got {num_values!r}")
        if not low < high:
            raise ValueError(f"low ({low}) must be below high ({high})")
        self.num_latents = num_latents
        self.num_values = num_values
        self.shared = shared
        values = torch.linspace(low, high, num_values).repeat(1 if shared else num_latents, 1)
        if trainable:
            self.values = nn.Parameter(values)
        else:
            self.register_buffer("values", values)

    def codebooks(self) -> torch.Tensor:
        """The (n_z, n_v) codebook matrix (the shared row repeated when ``shared``)."""
        return self.values.expand(self.num_latents, -1)

    def forward(self, z: torch.Tensor) -> Quantized:
        """Quantise latents (…, n_z); indices (…, n_z) index each dimension's codebook."""
        _check_latents("z", z, self.num_latents, "num_latents")
        books = self.codebooks().to(z.dtype)
        distance = (z.unsqueeze(-1) - books).abs()
        indices = distance.argmin(dim=-1)
        z_q = torch.gather(books.expand(*z.shape, -1), -1, indices.unsqueeze(-1)).squeeze(-1)
        return Quantized(z_hat=z + (z_q - z).detach(), z_q=z_q, indices=indices,
                         quantization_loss=F.mse_loss(z_q, z.detach()),
                         commitment_loss=F.mse_loss(z, z_q.detach()))


def rotate_to(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The rotation trick's ẑ = sg(λR)·z: value ``target``, gradient λR to ``z`` (rows).

    R rotates z/‖z‖ onto target/‖target‖ within their plane; λ = ‖target‖/‖z‖. Both R and λ are
    constants of the backward pass (Fifty et al. 2024, §4.2).
    """
    eps = torch.finfo(z.dtype).eps
    z_norm = z.detach().norm(dim=-1, keepdim=True).clamp_min(eps)
    t_norm = target.detach().norm(dim=-1, keepdim=True).clamp_min(eps)
    z_unit, t_unit = z.detach() / z_norm, target.detach() / t_norm
    r = F.normalize(z_unit + t_unit, dim=-1, eps=eps)
    rotated = (z - 2 * r * (z * r).sum(-1, keepdim=True)
               + 2 * t_unit * (z * z_unit).sum(-1, keepdim=True))
    return rotated * (t_norm / z_norm)


class VectorQuantizer(nn.Module):
    """Cosine-codebook vector quantisation (GigaTok/LlamaGen; module docstring).

    Args:
        num_codes: K codebook entries.
        dim: code dimension (the last dimension of the latents).
        beta: β of the commitment loss (0.25 officially).
        estimator: ``"rotation"`` (GigaTok's configs) or ``"straight_through"``.
        metric: ``"cosine"`` (unit latents and codes) or ``"euclidean"`` (plain VQ-VAE).
        chunk_size: rows per distance block (memory bound for large K).
    """

    def __init__(self, num_codes: int, dim: int, *, beta: float = 0.25,
                 estimator: str = "rotation", metric: str = "cosine",
                 chunk_size: int = 4096) -> None:
        super().__init__()
        if not isinstance(num_codes, int) or num_codes < 2:
            raise ValueError(f"num_codes must be an integer ≥ 2, got {num_codes!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number ≥ 0, got {beta}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.estimator, self.metric, self.chunk_size = estimator, metric, chunk_size
        # LlamaGen's init: uniform(−1/K, 1/K), then used through l2 normalisation; QLAE's
        # VQ-VAE draws uniform(±√(3/dim)).
        limit = 1 / num_codes if metric == "cosine" else math.sqrt(3 / dim)
        self.embedding = nn.Parameter(torch.empty(num_codes, dim).uniform_(-limit, limit))

    def _prepare(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=-1) if self.metric == "cosine" else z

    def codebook(self) -> torch.Tensor:
        """The (K, dim) codebook, l2-normalised under the cosine metric."""
        return self._prepare(self.embedding)

    def affinity(self, z: torch.Tensor) -> torch.Tensor:
        """−‖ẑ_i − e_j‖² (unit ẑ and e under cosine): GigaTok's entropy-loss logits (N, K)."""
        flat = self._prepare(z.reshape(-1, self.dim))
        codes = self.codebook().to(flat.dtype)
        return -(flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ codes.t()
                 + codes.pow(2).sum(-1))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code to each latent row (ties: the lower index), chunked."""
        flat = self._prepare(z.detach().reshape(-1, self.dim))
        codes = self.codebook().detach().to(flat.dtype)
        squared = codes.pow(2).sum(-1)
        return torch.cat([(squared - 2 * chunk @ codes.t()).argmin(-1)
                          for chunk in flat.split(self.chunk_size)]).reshape(z.shape[:-1])

    def forward(self, z: torch.Tensor) -> Quantized:
        """Quantise latents (…, dim); indices (…) select rows of :meth:`codebook`."""
        _check_latents("z", z, self.dim, "dim")
        z_unit = self._prepare(z)
        indices = self.nearest(z_unit)
        z_q = F.embedding(indices, self.codebook()).to(z.dtype)
        if self.estimator == "rotation":
            z_hat = rotate_to(z_unit, z_q)
        else:
            z_hat = z_unit + (z_q - z_unit).detach()
        return Quantized(z_hat=z_hat, z_q=z_q, indices=indices,
                         quantization_loss=F.mse_loss(z_q, z_unit.detach()),
                         commitment_loss=self.beta * F.mse_loss(z_unit, z_q.detach()))


def codebook_usage(indices: torch.Tensor, num_codes: int) -> float:
    """Share of the ``num_codes`` codes that ``indices`` uses at least once."""
    if num_codes < 1:
        raise ValueError(f"num_codes must be positive, got {num_codes}")
    if indices.numel() == 0:
        raise ValueError("indices is empty")
    return float(torch.unique(indices).numel() / num_codes)


def perplexity(indices: torch.Tensor, num_codes: int) -> float:
    """exp(H(p)) of the code histogram p: K for uniform use, 1 when one code takes everything."""
    if num_codes < 1:
        raise ValueError(f"num_codes must be positive, got {num_codes}")
    if indices.numel() == 0:
        raise ValueError("indices is empty")
    counts = torch.bincount(indices.reshape(-1).long(), minlength=num_codes).double()
    p = counts / counts.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
