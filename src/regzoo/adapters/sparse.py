r"""Sparse updates of linear layers (value mode): train a chosen set of weight entries in place.

A :class:`SparseValueLinear` selects the entries ``I`` (flat indices into the (out, in) weight)
of a frozen pretrained ``W₀`` and trains their *values* ``v`` directly:

.. math::

    W = W_0 \odot (1 - M) + \operatorname{scatter}_I(v), \qquad v_0 = W_0[I], \qquad
    \Delta W = \operatorname{scatter}_I(v - W_0[I]),

with ``M`` the 0/1 mask of ``I``. Training the values themselves, not a delta, is what SaRA does
(arXiv 2409.06633 §3; official ``optim/adamw.py``): AdamW's decoupled weight decay then pulls the
selected weights towards 0, as in the paper. At ``v = v₀`` the layer computes exactly ``W₀``.

Two paths with the same mathematics:

* ``mode="sparse"`` (SaRA's "unstructured backpropagation"): the trainable tensor is the 1-D
  ``values`` (nnz entries); the forward writes them into a copy of ``W₀`` with ``index_put`` and
  autograd gathers ``∂L/∂W`` at ``I``. Gradients and optimizer state cost O(nnz); the dense
  ``∂L/∂W`` exists only transiently inside the backward.
* ``mode="dense"``: a dense (out, in) parameter ``dense_values`` (zero off the mask) is used
  through ``where(M, ·, W₀)``; its gradient is zero off the mask, so AdamW leaves those entries at
  0 exactly. Gradients and optimizer state cost O(out·in): the reference the sparse path is
  checked against (the official ``optim/adamw2.py`` is this kind of dense masked training).

Entries can leave the trainable set (:meth:`SparseValueLinear.restrict`): they keep their trained
value, frozen, and :meth:`SparseHandle.restrict` carries the optimizer's per-entry state over to
the smaller parameter. :meth:`SparseHandle.adapter_state_dict` holds only indices and values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.adapters.base import (
    AdapterHandle,
    AdapterLayer,
    find_targets,
    is_transposed_linear,
    wrap,
)
from regzoo.core.checks import check_choice, check_range

MODES = ("sparse", "dense")
RULES = ("smallest", "largest", "random")


def selection_count(numel: int, fraction: float) -> int:
    """⌊fraction · numel⌋, the number of entries a ``fraction`` selects in a tensor of ``numel``."""
    check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False)
    return int(fraction * numel)


def select_entries(weight: torch.Tensor, count: int, rule: str = "smallest",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Flat indices (ascending) of ``count`` entries of ``weight`` chosen by ``rule``.

    ``"smallest"`` / ``"largest"``: by |w|, ties broken by the lower flat index (a stable sort),
    so the count is exact and the choice deterministic; ``"random"``: uniformly without
    replacement from ``generator``.
    """
    check_choice("rule", rule, RULES)
    numel = weight.numel()
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= numel:
        raise ValueError(f"count must be an int in [0, {numel}], got {count!r}")
    magnitude = weight.detach().reshape(-1).abs()
    if rule == "random":
        chosen = torch.randperm(numel, generator=generator)[:count].to(weight.device)
    else:
        order = torch.sort(magnitude, stable=True, descending=rule == "largest").indices
        chosen = order[:count]
    return torch.sort(chosen).values


def select_below(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """Flat indices (ascending) of the entries with |w| < ``threshold`` (SaRA's absolute τ)."""
    check_range("threshold", threshold, 0.0, low_inclusive=False)
    return torch.nonzero(weight.detach().reshape(-1).abs() < threshold).reshape(-1)


class SparseValueLinear(AdapterLayer):
    """A linear layer whose entries at ``index`` are trainable values, the rest frozen ``W₀``.

    Buffers: ``index`` (active flat indices), ``origin`` (``W₀`` there); ``fixed_index``,
    ``fixed_values``, ``fixed_origin`` for entries that left the trainable set with a trained
    value. Parameter: ``values`` (sparse mode, nnz) or ``dense_values`` (dense mode, out × in).
    """

    def __init__(self, base: nn.Module, index: torch.Tensor, *, mode: str = "sparse") -> None:
        super().__init__(base)
        check_choice("mode", mode, MODES)
        self.mode = mode
        weight = self.weight_matrix().detach()
        numel = weight.numel()
        if not isinstance(index, torch.Tensor) or index.dtype != torch.int64 or index.ndim != 1:
            raise TypeError("index must be a 1-D int64 tensor of flat indices into the "
                            "(out, in) weight")
        index = index.to(weight.device)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= numel
                              or bool((index[1:] <= index[:-1]).any())):
            raise ValueError(f"index must be strictly increasing flat indices in [0, {numel}); "
                             "use select_entries or select_below")
        origin = weight.reshape(-1)[index].clone()
        empty = index.new_empty(0)
        self.register_buffer("index", index.clone())
        self.register_buffer("origin", origin)
        self.register_buffer("fixed_index", empty)
        self.register_buffer("fixed_values", origin.new_empty(0))
        self.register_buffer("fixed_origin", origin.new_empty(0))
        if mode == "sparse":
            self.values = nn.Parameter(origin.clone())
        else:
            mask = torch.zeros(numel, dtype=torch.bool, device=weight.device)
            mask[index] = True
            self.register_buffer("mask", mask.view_as(weight))
            dense = torch.zeros_like(weight).reshape(-1).index_put((index,), origin)
            self.dense_values = nn.Parameter(dense.view_as(weight))

    @property
    def num_selected(self) -> int:
        """The number of trainable entries now."""
        return int(self.index.numel())

    @property
    def trainable(self) -> nn.Parameter:
        """The parameter the optimizer updates (``values`` or ``dense_values``)."""
        return self.values if self.mode == "sparse" else self.dense_values

    def selected_values(self) -> torch.Tensor:
        """The current values at ``index`` (1-D, differentiable)."""
        if self.mode == "sparse":
            return self.values
        return self.dense_values.reshape(-1)[self.index]

    def masked_weight(self) -> torch.Tensor:
        """``W ⊙ M``: the trainable entries in an otherwise zero (out, in) matrix."""
        zeros = self.weight_matrix().new_zeros(self.weight_matrix().shape)
        if self.mode == "dense":
            return torch.where(self.mask, self.dense_values, zeros)
        return zeros.reshape(-1).index_put((self.index,), self.values).view_as(zeros)

    def effective_weight(self) -> torch.Tensor:
        """``W₀ ⊙ (1 − M) + scatter(v)`` (with frozen trained entries), shape (out, in)."""
        weight = self.weight_matrix()
        flat = weight.reshape(-1)
        if self.fixed_index.numel():
            flat = flat.index_put((self.fixed_index,), self.fixed_values)
        if self.mode == "sparse":
            flat = flat.index_put((self.index,), self.values)
            return flat.view(weight.shape)
        return torch.where(self.mask, self.dense_values, flat.view(weight.shape))

    def delta_weight(self) -> torch.Tensor:
        """``ΔW = scatter(v − W₀[I])``, exact zero off the (active and frozen) entries."""
        zeros = self.weight_matrix().new_zeros(self.weight_matrix().shape).reshape(-1)
        delta = zeros.index_put((self.index,), self.selected_values() - self.origin)
        if self.fixed_index.numel():
            delta = delta.index_put((self.fixed_index,), self.fixed_values - self.fixed_origin)
        return delta.view(self.weight_matrix().shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        # One product with the effective weight (not base(x) + x ΔWᵀ): same cost as the
        # plain layer, and frozen entries are bit-identical to W₀ in what the layer computes.
        return F.linear(x, self.effective_weight(), getattr(self.base, "bias", None))

    def merge(self) -> None:
        """Write the trained values into the base weight (exact, no rounding)."""
        if not self.merged:
            with torch.no_grad():
                self.set_weight_matrix(self.effective_weight())
            self.merged = True

    def unmerge(self) -> None:
        """Put ``W₀`` back at every touched entry (exact)."""
        if self.merged:
            with torch.no_grad():
                flat = self.weight_matrix().contiguous().reshape(-1).clone()
                flat[self.index] = self.origin
                flat[self.fixed_index] = self.fixed_origin
                self.set_weight_matrix(flat.view(self.weight_matrix().shape))
            self.merged = False

    def restrict(self, keep: torch.Tensor) -> nn.Parameter:
        """Keep training only the active entries where ``keep`` is True; freeze the others.

        The entries that leave keep their trained value. Returns the new trainable parameter
        (a new, smaller ``values`` in sparse mode; the same ``dense_values`` in dense mode).
        """
        if self.merged:
            raise RuntimeError("unmerge() before changing the trainable entries")
        if keep.dtype != torch.bool or keep.shape != self.index.shape:
            raise ValueError(f"keep must be a bool tensor of shape {tuple(self.index.shape)} "
                             "(one flag per active entry)")
        keep = keep.to(self.index.device)
        with torch.no_grad():
            current = self.selected_values().detach()
            leaving = ~keep
            fixed_index = torch.cat([self.fixed_index, self.index[leaving]])
            order = torch.argsort(fixed_index)
            self.fixed_index = fixed_index[order]
            self.fixed_values = torch.cat([self.fixed_values, current[leaving]])[order]
            self.fixed_origin = torch.cat([self.fixed_origin, self.origin[leaving]])[order]
            if self.mode == "dense":
                self.mask.view(-1)[self.index[leaving]] = False
            self.index = self.index[keep]
            self.origin = self.origin[keep]
        if self.mode == "sparse":
            self.values = nn.Parameter(current[keep].clone())
        return self.trainable

    def load_entries(self, index: torch.Tensor, values: torch.Tensor,
                     fixed_index: torch.Tensor, fixed_values: torch.Tensor) -> None:
        """Set the active and frozen entries from saved indices and values (``W₀`` from base)."""
        if self.merged:
            raise RuntimeError("unmerge() before loading adapter weights")
        weight = self.weight_matrix().detach().reshape(-1)
        for name, idx, val in (("index", index, values), ("fixed_index", fixed_index,
                                                           fixed_values)):
            if idx.dtype != torch.int64 or idx.ndim != 1 or val.shape != idx.shape:
                raise ValueError(f"{name} must be 1-D int64 with values of the same length")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= weight.numel()):
                raise ValueError(f"{name} holds flat indices outside [0, {weight.numel()})")
        device, dtype = weight.device, weight.dtype
        index, fixed_index = index.to(device), fixed_index.to(device)
        self.index, self.origin = index.clone(), weight[index].clone()
        self.fixed_index, self.fixed_origin = fixed_index.clone(), weight[fixed_index].clone()
        self.fixed_values = fixed_values.to(device, dtype).clone()
        with torch.no_grad():
            if self.mode == "sparse":
                self.values = nn.Parameter(values.to(device, dtype).clone())
            else:
                self.mask.zero_()
                self.mask.view(-1)[index] = True
                dense = torch.zeros_like(weight).index_put((index,), values.to(device, dtype))
                self.dense_values.copy_(dense.view_as(self.dense_values))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}, selected={self.num_selected}"


def _remap_state(optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter,
                 keep: torch.Tensor) -> None:
    """Swap ``old`` for ``new`` in ``optimizer``, keeping per-entry state at the kept entries."""
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
    state = optimizer.state.pop(old, None)
    if state is not None:
        optimizer.state[new] = {k: v[keep] if isinstance(v, torch.Tensor)
                                and v.shape == old.shape else v for k, v in state.items()}


class SparseHandle(AdapterHandle):
    """Handle of a model with :class:`SparseValueLinear` layers."""

    layers: dict[str, SparseValueLinear]

    @property
    def num_selected(self) -> int:
        """Trainable entries over all layers."""
        return sum(layer.num_selected for layer in self.layers.values())

    def counts(self) -> dict[str, int]:
        """Trainable entries per layer."""
        return {name: layer.num_selected for name, layer in self.layers.items()}

    def restrict(self, keep: Mapping[str, torch.Tensor],
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        """Apply :meth:`SparseValueLinear.restrict` per layer (``keep`` keyed by layer name).

        With ``optimizer``, each sparse ``values`` parameter is replaced by its successor in the
        optimizer's groups and its per-entry state (Adam's moments) is sliced to the kept
        entries, so training goes on with O(kept) state; scalar state (the step) is kept.
        """
        self._check_live()
        unknown = set(keep) - set(self.layers)
        if unknown:
            raise ValueError(f"keep has unknown layer names {sorted(unknown)}; layers are "
                             f"{sorted(self.layers)}")
        for name, flags in keep.items():
            layer = self.layers[name]
            old = layer.trainable
            new = layer.restrict(flags)
            if optimizer is not None and new is not old:
                _remap_state(optimizer, old, new, flags.to(old.device))

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the touched entries, per layer: index, values, fixed_index, fixed_values."""
        self._check_live()
        state: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            state[f"{name}.index"] = layer.index.clone()
            state[f"{name}.values"] = layer.selected_values().detach().clone()
            state[f"{name}.fixed_index"] = layer.fixed_index.clone()
            state[f"{name}.fixed_values"] = layer.fixed_values.clone()
        return state

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`adapter_state_dict` output into a model wrapped on the same base weights.

        Sparse-mode ``values`` parameters are replaced: build the optimizer afterwards.
        """
        self._check_live()
        suffixes = ("index", "values", "fixed_index", "fixed_values")
        own = {f"{name}.{s}" for name in self.layers for s in suffixes}
        missing, unexpected = own - state.keys(), state.keys() - own
        if missing or unexpected:
            raise ValueError(f"state: missing keys {sorted(missing)}, unexpected keys "
                             f"{sorted(unexpected)}; was it saved from the same adapter?")
        for name, layer in self.layers.items():
            layer.load_entries(*(state[f"{name}.{s}"] for s in suffixes))


def training_state_bytes(parameters: Sequence[nn.Parameter],
                         optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of the gradients of ``parameters`` and of ``optimizer``'s tensor state, now.

    Call after a step (before ``zero_grad(set_to_none=True)``) to see what training holds
    besides the weights and activations.
    """
    grads = sum(p.grad.numel() * p.grad.element_size() for p in parameters if p.grad is not None)
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values()
                for v in s.values() if isinstance(v, torch.Tensor) and v.ndim > 0)
    return {"gradient_bytes": int(grads), "optimizer_bytes": int(state),
            "trainable_bytes": int(sum(p.numel() * p.element_size() for p in parameters))}


def apply_sparse(model: nn.Module, *, target_modules: Sequence[str] | str | None = None,
                 fraction: float | None = None, threshold: float | None = None,
                 rule: str = "smallest", mode: str = "sparse", seed: int = 0,
                 modules_to_save: Sequence[str] | str = (),
                 handle_cls: type[SparseHandle] = SparseHandle,
                 choose: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
                 **handle_kwargs: object) -> SparseHandle:
    """Make a sparse set of entries of every target linear layer trainable; freeze the rest.

    Args:
        model: wrapped in place (targets as in :func:`regzoo.adapters.base.find_targets`).
        fraction: per layer, ⌊fraction · out · in⌋ entries are selected by ``rule``.
        threshold: instead of ``fraction``: as many entries as have |W₀| < threshold per layer
            (with ``rule="smallest"`` exactly those; otherwise that count by ``rule``).
        rule: ``"smallest"`` |w| (SaRA), ``"largest"`` |w|, or ``"random"`` (seeded by ``seed``).
        mode: ``"sparse"`` (O(nnz) gradients and state) or ``"dense"`` (masked dense parameter).
        choose: optional ``choose(name, weight) -> flat indices`` overriding the rule.
    """
    check_choice("mode", mode, MODES)
    check_choice("rule", rule, RULES)
    if choose is None and (fraction is None) == (threshold is None):
        raise ValueError("pass exactly one of fraction= (share of entries per layer) or "
                         "threshold= (absolute |w| bound)")
    if fraction is not None:
        check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False)
    if threshold is not None:
        check_range("threshold", threshold, 0.0, low_inclusive=False)
    targets = find_targets(model, target_modules)
    generator = torch.Generator().manual_seed(seed)
    chosen: dict[str, torch.Tensor] = {}
    for name, module in targets:
        weight = module.weight.detach()
        weight = weight.t() if is_transposed_linear(module) else weight
        if choose is not None:
            index = choose(name, weight)
        elif threshold is not None and rule == "smallest":
            index = select_below(weight, threshold)
        else:
            count = (selection_count(weight.numel(), fraction) if fraction is not None
                     else int((weight.abs() < threshold).sum()))
            index = select_entries(weight, count, rule, generator)
        chosen[name] = index
    if sum(int(i.numel()) for i in chosen.values()) == 0:
        raise ValueError("the selection is empty in every target layer; raise fraction or "
                         "threshold (a fraction selects ⌊fraction·out·in⌋ entries per layer)")
    return wrap(model, targets, lambda name, m: SparseValueLinear(m, chosen[name], mode=mode),
                modules_to_save=modules_to_save, handle_cls=handle_cls, **handle_kwargs)
