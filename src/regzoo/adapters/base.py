"""The machinery every adapter shares: find target layers, wrap them, freeze the rest, undo it.

An adapter keeps a pretrained linear map ``W`` (out × in) frozen and adds a trainable update
``ΔW`` that the adapter parameterises (low-rank factors, sparse values, a binary mask):

    y = x (W + ΔW)ᵀ + b.

:class:`AdapterLayer` wraps one linear-like layer: ``nn.Linear`` or the ``Conv1D`` of GPT-2 style
transformers, whose weight is stored in × out (peft's ``fan_in_fan_out``). :func:`wrap` swaps
every target for its wrapper in place and freezes every other parameter, as peft's
``get_peft_model`` does, except the parameters another regzoo transform added (tagged by
:func:`regzoo.core.kinds.mark_transform_parameters`: HAG's gates, FTWT's predictors, an adapter
on another layer), so both transforms train; :class:`AdapterHandle` merges ``ΔW`` into the
weights (no inference latency), unmerges it, and removes the wrappers.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatch

import torch
from torch import nn

from regzoo.core.kinds import mark_transform_parameters, transform_owner


def is_transposed_linear(module: nn.Module) -> bool:
    """True for GPT-2's ``Conv1D``: a linear map whose weight is stored (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def is_linear_like(module: nn.Module) -> bool:
    """An ``nn.Linear`` (or subclass) or a transformers ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_transposed_linear(module)


class AdapterLayer(nn.Module, abc.ABC):
    """One wrapped linear layer: the frozen ``base`` plus a trainable update ``ΔW``.

    Subclasses create their parameters in ``__init__``, implement :meth:`delta_weight` (the
    dense ``ΔW``, out × in, differentiable) and :meth:`adapter_forward` (the update's
    contribution to the output, computed without forming ``ΔW`` where that is cheaper).
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.check_base(base)
        self.base = base
        self.transposed = is_transposed_linear(base)
        self.merged = False
        for parameter in base.parameters():
            parameter.requires_grad_(False)

    @classmethod
    def check_base(cls, base: nn.Module) -> None:
        """Refuse a layer this adapter cannot wrap (here: anything but a linear-like layer)."""
        if not is_linear_like(base):
            raise TypeError(f"an adapter wraps nn.Linear or transformers' Conv1D, got "
                            f"{type(base).__name__}")

    @property
    def in_features(self) -> int:
        return self.weight_matrix().shape[1]

    @property
    def out_features(self) -> int:
        return self.weight_matrix().shape[0]

    def weight_matrix(self) -> torch.Tensor:
        """The base weight as the (out, in) matrix of the map, a view of the stored tensor."""
        weight = self.base.weight
        return weight.t() if self.transposed else weight

    def set_weight_matrix(self, matrix: torch.Tensor) -> None:
        """Overwrite the base weight with an (out, in) matrix, in the base's layout and dtype."""
        with torch.no_grad():
            stored = matrix.t() if self.transposed else matrix
            self.base.weight.copy_(stored.to(self.base.weight.dtype))

    @abc.abstractmethod
    def delta_weight(self) -> torch.Tensor:
        """The dense update ΔW, shape (out, in), differentiable in the adapter's parameters."""

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The update's contribution ``x ΔWᵀ``; the dense product unless a subclass does better."""
        return x @ self.delta_weight().t()

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of this layer's update."""
        return [p for name, p in self.named_parameters() if not name.startswith("base.")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + self.adapter_forward(x).to(out.dtype)

    def merge(self) -> None:
        """Fold ``ΔW`` into the base weight; the forward then runs the base layer alone."""
        if not self.merged:
            with torch.no_grad():
                self.set_weight_matrix(self.weight_matrix() + self.delta_weight())
            self.merged = True

    def unmerge(self) -> None:
        """Subtract ``ΔW`` again; exact up to floating-point rounding of the base dtype."""
        if self.merged:
            with torch.no_grad():
                self.set_weight_matrix(self.weight_matrix() - self.delta_weight())
            self.merged = False

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"merged={self.merged}")


def _matches(name: str, entry: str) -> bool:
    return name == entry or name.endswith("." + entry) or fnmatch(name, entry)


def _select(model: nn.Module, entries: Sequence[str] | str, argument: str
            ) -> list[tuple[str, nn.Module]]:
    if isinstance(entries, str):
        entries = (entries,)
    named = [(name, module) for name, module in model.named_modules() if name]
    chosen: dict[str, nn.Module] = {}
    for entry in entries:
        hits = [(name, module) for name, module in named if _matches(name, entry)]
        if not hits:
            raise ValueError(f"{argument}: no module of the model matches {entry!r}; module "
                             f"names are {[name for name, _ in named][:40]}")
        chosen.update(hits)
    return list(chosen.items())


def select_layers(model: nn.Module, target_modules: Sequence[str] | str | None, *,
                  accepts: Callable[[nn.Module], bool], kinds: str,
                  refusal: Callable[[str, nn.Module], str]) -> list[tuple[str, nn.Module]]:
    """The layers ``accepts`` takes, as (qualified name, module), in model order.

    ``None`` selects every accepted layer not inside an adapter. Otherwise each entry selects,
    peft-style, the modules whose qualified name equals it, ends with ``"." + entry``, or matches
    it as a glob; an entry matching nothing is a ``ValueError`` listing the names, a module named
    explicitly that is not accepted and contains no accepted layer a ``TypeError`` with
    ``refusal(name, module)``, a module that already carries an adapter a ``ValueError``. A glob
    keeps the accepted layers it matches. ``kinds`` names the accepted layers in messages.
    """
    wrapped = [name for name, m in model.named_modules() if isinstance(m, AdapterLayer)]

    def inside_adapter(name: str) -> bool:
        return any(name.startswith(w + ".") for w in wrapped)

    def added_by(module: nn.Module) -> str | None:
        """The transform whose parameters ``module`` holds (a HAG gate, an FTWT predictor)."""
        owners = {transform_owner(p) for p in module.parameters()}
        return owners.pop() if len(owners) == 1 else None

    if target_modules is None:
        found = [(name, m) for name, m in model.named_modules()
                 if name and accepts(m) and not inside_adapter(name) and added_by(m) is None]
        if not found:
            raise ValueError(f"target_modules=None selects every layer without an adapter among "
                             f"the {kinds}, and the model has none; pass module names")
        return found
    if not isinstance(target_modules, str) and not target_modules:
        raise ValueError(f"target_modules is empty; pass None for every one of the {kinds}")
    entries = (target_modules,) if isinstance(target_modules, str) else tuple(target_modules)
    targets: dict[str, nn.Module] = {}
    for entry in entries:
        is_glob = any(ch in entry for ch in "*?[")
        for name, module in _select(model, entry, "target_modules"):
            if isinstance(module, AdapterLayer):
                raise ValueError(f"target_modules: {name!r} already carries an adapter "
                                 f"({type(module).__name__}); one adapter per layer: remove() "
                                 "that adapter's handle first, or target another layer")
            if inside_adapter(name):
                continue
            owner = added_by(module)
            if owner is not None and accepts(module):
                raise ValueError(f"target_modules: {name!r} was added to the model by {owner}, "
                                 "not a layer of the network; target the network's own layers")
            if accepts(module):
                targets[name] = module
            elif not is_glob and not any(accepts(m) for m in module.modules()):
                raise TypeError(refusal(name, module))
    if not targets:
        raise ValueError(f"target_modules={target_modules!r} selects none of the {kinds}")
    order = [name for name, _ in model.named_modules()]
    return sorted(targets.items(), key=lambda item: order.index(item[0]))


def find_targets(model: nn.Module, target_modules: Sequence[str] | str | None = None
                 ) -> list[tuple[str, nn.Module]]:
    """The linear layers to adapt, as (qualified name, module), in model order.

    Names resolve as in :func:`select_layers` (exact, ``.``-suffix, glob; ``None``: every
    linear-like layer). Naming a block that contains linear layers selects none of them (name
    the layers).
    """
    return select_layers(
        model, target_modules, accepts=is_linear_like, kinds="linear layers",
        refusal=lambda name, module: (
            f"target_modules: {name!r} is a {type(module).__name__}, not a linear layer; "
            "adapters wrap nn.Linear (or transformers' Conv1D)"))


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


class AdapterHandle:
    """What ``apply(...)`` returns: the wrapped layers and the operations on them.

    ``trainable_parameters()`` is what the optimizer gets; ``penalty()`` is zero unless the
    method adds a regulariser on its parameters.
    """

    def __init__(self, model: nn.Module, layers: dict[str, AdapterLayer],
                 saved: Sequence[nn.Module] = ()) -> None:
        self.model = model
        self.layers = layers
        self.saved = list(saved)
        self.removed = False
        self.requires_grad_before: list[tuple[nn.Parameter, bool]] = []

    def _check_live(self) -> None:
        if self.removed:
            raise RuntimeError("this adapter handle was removed; apply the adapter again")

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The parameters of every update (no base weights, no saved modules)."""
        self._check_live()
        return [p for layer in self.layers.values() for p in layer.adapter_parameters()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Adapter parameters plus those of ``modules_to_save`` (a new classifier head, say)."""
        extra = [p for module in self.saved for p in module.parameters()]
        return self.adapter_parameters() + extra

    def penalty(self) -> torch.Tensor:
        """The method's regulariser on its parameters; zero for plain adapters."""
        self._check_live()
        reference = next(iter(self.layers.values())).weight_matrix()
        return reference.new_zeros(())

    def merge(self) -> None:
        """Fold every update into its base weight (inference without extra latency)."""
        self._check_live()
        for layer in self.layers.values():
            layer.merge()

    def unmerge(self) -> None:
        """Undo :meth:`merge`; training can go on afterwards."""
        self._check_live()
        for layer in self.layers.values():
            layer.unmerge()

    def remove(self) -> None:
        """Merge, put the plain base layers back and retire the handle.

        Every parameter gets back the ``requires_grad`` flag it had before ``apply``.
        """
        self.merge()
        for name, layer in self.layers.items():
            _set_submodule(self.model, name, layer.base)
        for parameter, flag in self.requires_grad_before:
            parameter.requires_grad_(flag)
        self.removed = True

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the update parameters, keyed ``<layer>.<parameter>``: what a user saves."""
        self._check_live()
        return {f"{name}.{pname}": p.detach().clone()
                for name, layer in self.layers.items()
                for pname, p in layer.named_parameters() if not pname.startswith("base.")}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`adapter_state_dict` saved; keys and shapes must match exactly."""
        own = {f"{name}.{pname}": p
               for name, layer in self.layers.items()
               for pname, p in layer.named_parameters() if not pname.startswith("base.")}
        missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
        if missing or unexpected:
            raise ValueError(f"state: missing keys {sorted(missing)}, unexpected keys "
                             f"{sorted(unexpected)}; was it saved from the same adapter?")
        if any(layer.merged for layer in self.layers.values()):
            raise RuntimeError("unmerge() before loading adapter weights")
        with torch.no_grad():
            for key, parameter in own.items():
                if state[key].shape != parameter.shape:
                    raise ValueError(f"state[{key!r}] has shape {tuple(state[key].shape)}, "
                                     f"the adapter expects {tuple(parameter.shape)}")
                parameter.copy_(state[key])


def wrap(model: nn.Module, targets: Iterable[tuple[str, nn.Module]],
         make_layer: Callable[[str, nn.Module], AdapterLayer], *,
         modules_to_save: Sequence[str] | str = (),
         handle_cls: type[AdapterHandle] = AdapterHandle, **handle_kwargs) -> AdapterHandle:
    """Replace each target with ``make_layer(name, module)`` in place and freeze the rest.

    Every parameter of the model except the new layers' updates, those of ``modules_to_save``
    (matched like ``target_modules``) and those another transform added (tagged with its name)
    stops requiring gradients; the new updates are tagged with this adapter's name (the method
    module's, e.g. ``sorsa``, else the handle class's). All layers are built before any is
    swapped in, so a layer that fails to build leaves the model's modules and ``requires_grad``
    flags as they were.
    """
    targets = list(targets)
    saved_named = _select(model, modules_to_save, "modules_to_save") if modules_to_save else []
    target_names = {name for name, _ in targets}
    for name, _ in saved_named:
        if name in target_names:
            raise ValueError(f"modules_to_save: {name!r} is also an adapter target; "
                             "a layer is either adapted or trained in full")
    saved = [module for _, module in saved_named]
    requires_grad_before = [(p, p.requires_grad) for p in model.parameters()]
    try:
        built = [(name, make_layer(name, module)) for name, module in targets]
    except Exception:
        # Nothing is swapped in yet; give every parameter its flag back before re-raising.
        for parameter, flag in requires_grad_before:
            parameter.requires_grad_(flag)
        raise
    for parameter in model.parameters():
        if transform_owner(parameter) is None:
            parameter.requires_grad_(False)
    origin = handle_cls.__module__
    owner = (origin.rsplit(".", 1)[-1] if origin.startswith("regzoo.methods.")
             else handle_cls.__qualname__)
    layers: dict[str, AdapterLayer] = {}
    for name, layer in built:
        mark_transform_parameters(layer.adapter_parameters(), owner)
        _set_submodule(model, name, layer)
        layers[name] = layer
    for module in saved:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    handle = handle_cls(model, layers, saved, **handle_kwargs)
    handle.requires_grad_before = requires_grad_before
    return handle
