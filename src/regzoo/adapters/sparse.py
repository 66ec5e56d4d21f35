r"""Sparse updates (value mode): train a chosen set of entries of pretrained tensors in place.

A :class:`SparseValueLayer` wraps one layer — ``nn.Linear`` (or GPT-2's ``Conv1D``), a
convolution, or (on request) a normalisation layer — and selects the entries ``I`` of its frozen
pretrained tensors ``W₀``: flat indices into the concatenation of the tensors it covers (the
weight alone by default; weight then bias with ``include_biases_and_norms``), each flattened in
the map's layout (the (out, in) matrix of a linear map, the stored kernel of a convolution). It
trains their *values* ``v`` directly:

.. math::

    W = W_0 \odot (1 - M) + \operatorname{scatter}_I(v), \qquad v_0 = W_0[I], \qquad
    \Delta W = \operatorname{scatter}_I(v - W_0[I]),

with ``M`` the 0/1 mask of ``I``. Training the values themselves, not a delta, is what SaRA does
(arXiv 2409.06633 §3; official ``optim/adamw.py``): AdamW's decoupled weight decay then pulls the
selected weights towards 0, as in the paper. At ``v = v₀`` the layer computes exactly ``W₀``.
The official optimizer selects among every parameter it is handed (SaRA's target, the SD-1.5
UNet, has convolution kernels as well as linear weights); :func:`apply_sparse` covers linear
layers and convolutions by default, biases and normalisation parameters on request.

Two paths with the same mathematics:

* ``mode="sparse"`` (SaRA's "unstructured backpropagation"): the trainable tensor is the 1-D
  ``values`` (nnz entries); the forward writes them into a copy of ``W₀`` with ``index_put`` and
  autograd gathers ``∂L/∂W`` at ``I``. Gradients and optimizer state cost O(nnz); the dense
  ``∂L/∂W`` exists only transiently inside the backward.
* ``mode="dense"``: a dense parameter ``dense_values`` (flat, one entry per covered entry, zero
  off the mask) is used through ``where(M, ·, W₀)``; its gradient is zero off the mask, so AdamW
  leaves those entries at 0 exactly. Gradients and optimizer state cost O(numel): the reference
  the sparse path is checked against (the official ``optim/adamw2.py`` is this kind of dense
  masked training).

Entries can leave the trainable set (:meth:`SparseValueLayer.restrict`): they keep their trained
value, frozen, and :meth:`SparseHandle.restrict` carries the optimizer's per-entry state over to
the smaller parameter. :meth:`SparseHandle.adapter_state_dict` holds only indices and values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.adapters.base import (
    AdapterHandle,
    AdapterLayer,
    is_linear_like,
    is_transposed_linear,
    select_layers,
    wrap,
)
from regzoo.core.checks import check_choice, check_range

MODES = ("sparse", "dense")
RULES = ("smallest", "largest", "random")
CONVOLUTIONS: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
"""Convolutions whose kernels a sparse update covers (``include_convolutions``)."""
NORMS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
"""Normalisation layers whose affine weight and bias it covers (``include_biases_and_norms``)."""


def covered_tensors(module: nn.Module, *, include_convolutions: bool = True,
                    include_biases_and_norms: bool = False) -> tuple[str, ...]:
    """Names of ``module``'s own parameters a sparse update covers; ``()``: not a target.

    The weight of a linear layer (and, with ``include_convolutions``, of a convolution); with
    ``include_biases_and_norms`` also their bias, and the affine weight and bias of a
    normalisation layer. Parameters the module does not have (``bias=False``, ``affine=False``)
    are left out; the weight, when covered, comes first.
    """
    if is_linear_like(module) or (include_convolutions and isinstance(module, CONVOLUTIONS)):
        names = ("weight", "bias") if include_biases_and_norms else ("weight",)
    elif include_biases_and_norms and isinstance(module, NORMS):
        names = ("weight", "bias")
    else:
        return ()
    return tuple(n for n in names if isinstance(getattr(module, n, None), torch.Tensor))


def layout_tensors(module: nn.Module, names: Sequence[str]) -> list[torch.Tensor]:
    """``module``'s tensors ``names`` in the map's layout (GPT-2 ``Conv1D``'s weight: out × in)."""
    return [module.weight.t() if name == "weight" and is_transposed_linear(module)
            else getattr(module, name) for name in names]


def find_sparse_targets(model: nn.Module, target_modules: Sequence[str] | str | None = None, *,
                        include_convolutions: bool = True, include_biases_and_norms: bool = False
                        ) -> list[tuple[str, nn.Module, tuple[str, ...]]]:
    """The layers a sparse update covers, as (name, module, :func:`covered_tensors`), in order.

    Names resolve as in :func:`regzoo.adapters.base.select_layers` (exact, ``.``-suffix, glob;
    ``None``: every covered layer not already adapted), over linear layers, convolutions (unless
    ``include_convolutions=False``) and, with ``include_biases_and_norms``, normalisation layers.
    """
    def covered(module: nn.Module) -> tuple[str, ...]:
        return covered_tensors(module, include_convolutions=include_convolutions,
                               include_biases_and_norms=include_biases_and_norms)

    kinds = "linear layers" + (", convolutions" if include_convolutions else "") + (
        ", normalisation layers" if include_biases_and_norms else "")
    found = select_layers(
        model, target_modules, accepts=lambda module: bool(covered(module)), kinds=kinds,
        refusal=lambda name, module: (
            f"target_modules: {name!r} is a {type(module).__name__}; a sparse update covers "
            f"{kinds} (convolutions: include_convolutions=True; norms and biases: "
            "include_biases_and_norms=True)"))
    return [(name, module, covered(module)) for name, module in found]


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


class SparseValueLayer(AdapterLayer):
    """A layer whose entries at ``index`` are trainable values, the rest frozen at ``W₀``.

    ``tensors`` names the base's covered parameters (:func:`covered_tensors`; the weight first);
    ``index`` holds flat indices into their concatenation, each flattened in the map's layout.
    Buffers: ``index`` (active flat indices), ``origin`` (``W₀`` there); ``fixed_index``,
    ``fixed_values``, ``fixed_origin`` for entries that left the trainable set with a trained
    value. Parameter: ``values`` (sparse mode, nnz) or ``dense_values`` (dense mode, flat).
    """

    def __init__(self, base: nn.Module, index: torch.Tensor, *, mode: str = "sparse",
                 tensors: Sequence[str] = ("weight",)) -> None:
        if is_linear_like(base):
            super().__init__(base)
        else:
            # AdapterLayer's constructor admits linear maps only; an entry-wise update needs no
            # matrix structure, so convolutions and norms get the same set-up here.
            nn.Module.__init__(self)
            self.base, self.transposed, self.merged = base, False, False
            for parameter in base.parameters():
                parameter.requires_grad_(False)
        check_choice("mode", mode, MODES)
        tensors = tuple(tensors)
        if not tensors or tensors[0] != "weight" or any(
                not isinstance(getattr(base, n, None), torch.Tensor) for n in tensors):
            raise ValueError(f"tensors must name parameters of the {type(base).__name__}, the "
                             f"weight first (see covered_tensors), got {tensors!r}")
        self.mode = mode
        self.tensors = tensors
        originals = [t.detach() for t in layout_tensors(base, tensors)]
        self.shapes = tuple(tuple(t.shape) for t in originals)
        self.sizes = tuple(t.numel() for t in originals)
        flat = self._flat(originals)
        numel = flat.numel()
        if not isinstance(index, torch.Tensor) or index.dtype != torch.int64 or index.ndim != 1:
            raise TypeError("index must be a 1-D int64 tensor of flat indices into the layer's "
                            f"covered tensors {tensors}")
        index = index.to(flat.device)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= numel
                              or bool((index[1:] <= index[:-1]).any())):
            raise ValueError(f"index must be strictly increasing flat indices in [0, {numel}); "
                             "use select_entries or select_below")
        origin = flat[index].clone()
        empty = index.new_empty(0)
        self.register_buffer("index", index.clone())
        self.register_buffer("origin", origin)
        self.register_buffer("fixed_index", empty)
        self.register_buffer("fixed_values", origin.new_empty(0))
        self.register_buffer("fixed_origin", origin.new_empty(0))
        self.register_buffer("ends", torch.tensor(self.sizes, device=flat.device).cumsum(0),
                             persistent=False)
        if mode == "sparse":
            self.values = nn.Parameter(origin.clone())
        else:
            mask = torch.zeros(numel, dtype=torch.bool, device=flat.device)
            mask[index] = True
            self.register_buffer("mask", mask)
            self.dense_values = nn.Parameter(torch.zeros_like(flat).index_put((index,), origin))

    @staticmethod
    def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(tensors) == 1:
            return tensors[0].reshape(-1)
        return torch.cat([t.reshape(-1) for t in tensors])

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        if len(self.sizes) == 1:
            # One covered tensor (the usual case): a view, whose backward is free, where the
            # backward of ``split`` concatenates (copies) the gradient.
            return [flat.view(self.shapes[0])]
        return [part.view(shape) for part, shape in zip(flat.split(self.sizes), self.shapes)]

    def _base_flat(self) -> torch.Tensor:
        return self._flat(layout_tensors(self.base, self.tensors))

    @property
    def num_selected(self) -> int:
        """The number of trainable entries now."""
        return int(self.index.numel())

    @property
    def trainable(self) -> nn.Parameter:
        """The parameter the optimizer updates (``values`` or ``dense_values``)."""
        return self.values if self.mode == "sparse" else self.dense_values

    def tensor_of(self, index: torch.Tensor) -> torch.Tensor:
        """For flat indices, the position in :attr:`tensors` of the tensor each falls in."""
        return torch.bucketize(index, self.ends, right=True)

    def tensor_counts(self) -> dict[str, int]:
        """Trainable entries now, per covered tensor."""
        counts = torch.bincount(self.tensor_of(self.index), minlength=len(self.tensors))
        return dict(zip(self.tensors, counts.tolist()))

    def selected_values(self) -> torch.Tensor:
        """The current values at ``index`` (1-D, differentiable)."""
        if self.mode == "sparse":
            return self.values
        return self.dense_values[self.index]

    def masked_weight(self) -> torch.Tensor:
        """``W ⊙ M``: the weight's trainable entries in an otherwise zero tensor (map layout)."""
        zeros = self.origin.new_zeros(sum(self.sizes))
        if self.mode == "dense":
            return self._split(torch.where(self.mask, self.dense_values, zeros))[0]
        return self._split(zeros.index_put((self.index,), self.values))[0]

    def effective_tensors(self) -> list[torch.Tensor]:
        """``W₀ ⊙ (1 − M) + scatter(v)`` (with frozen trained entries) per covered tensor."""
        flat = self._base_flat()
        if self.fixed_index.numel():
            flat = flat.index_put((self.fixed_index,), self.fixed_values)
        if self.mode == "sparse":
            flat = flat.index_put((self.index,), self.values)
        else:
            flat = torch.where(self.mask, self.dense_values, flat)
        return self._split(flat)

    def effective_weight(self) -> torch.Tensor:
        """The weight of :meth:`effective_tensors` ((out, in) for a linear map)."""
        return self.effective_tensors()[0]

    def delta_weight(self) -> torch.Tensor:
        """``ΔW = scatter(v − W₀[I])`` of the weight, exact zero off the touched entries."""
        zeros = self.origin.new_zeros(sum(self.sizes))
        delta = zeros.index_put((self.index,), self.selected_values() - self.origin)
        if self.fixed_index.numel():
            delta = delta.index_put((self.fixed_index,), self.fixed_values - self.fixed_origin)
        return self._split(delta)[0]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.merged:
            return self.base(x, *args, **kwargs)
        # One call with the effective tensors (not base(x) + the update's output): same cost as
        # the plain layer, and frozen entries are bit-identical to W₀ in what the layer computes.
        tensors = self.effective_tensors()
        if is_linear_like(self.base):
            bias = tensors[1] if len(tensors) > 1 else getattr(self.base, "bias", None)
            return F.linear(x, tensors[0], bias)
        return torch.func.functional_call(self.base, dict(zip(self.tensors, tensors)),
                                          (x, *args), kwargs)

    def _write(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite the covered base tensors (map layout) in the base's layout and dtype."""
        with torch.no_grad():
            for name, tensor in zip(self.tensors, tensors):
                if name == "weight":
                    self.set_weight_matrix(tensor)
                else:
                    stored = getattr(self.base, name)
                    stored.copy_(tensor.to(stored.dtype))

    def merge(self) -> None:
        """Write the trained values into the base tensors (exact, no rounding)."""
        if not self.merged:
            with torch.no_grad():
                self._write(self.effective_tensors())
            self.merged = True

    def unmerge(self) -> None:
        """Put ``W₀`` back at every touched entry (exact)."""
        if self.merged:
            with torch.no_grad():
                flat = self._base_flat().clone()
                flat[self.index] = self.origin
                flat[self.fixed_index] = self.fixed_origin
                self._write(self._split(flat))
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
                self.mask[self.index[leaving]] = False
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
        weight = self._base_flat().detach()
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
                self.mask[index] = True
                dense = torch.zeros_like(weight).index_put((index,), values.to(device, dtype))
                self.dense_values.copy_(dense)

    def extra_repr(self) -> str:
        return (f"{type(self.base).__name__}, tensors={self.tensors}, merged={self.merged}, "
                f"mode={self.mode}, selected={self.num_selected}")


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
    """Handle of a model with :class:`SparseValueLayer` layers."""

    layers: dict[str, SparseValueLayer]

    @property
    def num_selected(self) -> int:
        """Trainable entries over all layers."""
        return sum(layer.num_selected for layer in self.layers.values())

    def counts(self) -> dict[str, int]:
        """Trainable entries per layer."""
        return {name: layer.num_selected for name, layer in self.layers.items()}

    def restrict(self, keep: Mapping[str, torch.Tensor],
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        """Apply :meth:`SparseValueLayer.restrict` per layer (``keep`` keyed by layer name).

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
                 include_convolutions: bool = True, include_biases_and_norms: bool = False,
                 modules_to_save: Sequence[str] | str = (),
                 handle_cls: type[SparseHandle] = SparseHandle,
                 choose: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
                 **handle_kwargs: object) -> SparseHandle:
    """Make a sparse set of entries of every target layer trainable; freeze the rest.

    Args:
        model: wrapped in place (targets as in :func:`find_sparse_targets`).
        fraction: per covered tensor (each weight matrix, kernel, bias, …),
            ⌊fraction · numel⌋ entries are selected by ``rule``.
        threshold: instead of ``fraction``: as many entries as have |W₀| < threshold per tensor
            (with ``rule="smallest"`` exactly those; otherwise that count by ``rule``).
        rule: ``"smallest"`` |w| (SaRA), ``"largest"`` |w|, or ``"random"`` (seeded by ``seed``).
        mode: ``"sparse"`` (O(nnz) gradients and state) or ``"dense"`` (masked dense parameter).
        include_convolutions: cover convolution kernels too (the selection works on the
            flattened kernel); ``False`` adapts linear layers only.
        include_biases_and_norms: also cover the biases of the targets and the affine weight
            and bias of normalisation layers (:data:`NORMS`).
        choose: optional ``choose(name, tensor) -> flat indices`` overriding the rule, called
            per covered tensor with its qualified name (``"body.0.weight"``) in the map layout.
    """
    check_choice("mode", mode, MODES)
    check_choice("rule", rule, RULES)
    if choose is None and (fraction is None) == (threshold is None):
        raise ValueError("pass exactly one of fraction= (share of entries per tensor) or "
                         "threshold= (absolute |w| bound)")
    if fraction is not None:
        check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False)
    if threshold is not None:
        check_range("threshold", threshold, 0.0, low_inclusive=False)
    targets = find_sparse_targets(model, target_modules, include_convolutions=include_convolutions,
                                  include_biases_and_norms=include_biases_and_norms)
    generator = torch.Generator().manual_seed(seed)
    chosen: dict[str, torch.Tensor] = {}
    for name, module, tensors in targets:
        parts, offset = [], 0
        for tensor_name, tensor in zip(tensors, layout_tensors(module, tensors)):
            tensor = tensor.detach()
            if choose is not None:
                index = choose(f"{name}.{tensor_name}", tensor)
            elif threshold is not None and rule == "smallest":
                index = select_below(tensor, threshold)
            else:
                count = (selection_count(tensor.numel(), fraction) if fraction is not None
                         else int((tensor.abs() < threshold).sum()))
                index = select_entries(tensor, count, rule, generator)
            parts.append(index + offset)
            offset += tensor.numel()
        chosen[name] = torch.cat(parts)
    if sum(int(i.numel()) for i in chosen.values()) == 0:
        raise ValueError("the selection is empty in every target layer; raise fraction or "
                         "threshold (a fraction selects ⌊fraction·numel⌋ entries per tensor)")
    covered = {name: tensors for name, _, tensors in targets}
    return wrap(model, [(name, module) for name, module, _ in targets],
                lambda name, m: SparseValueLayer(m, chosen[name], mode=mode,
                                                 tensors=covered[name]),
                modules_to_save=modules_to_save, handle_cls=handle_cls, **handle_kwargs)
