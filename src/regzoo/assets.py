"""Pretrained assets, built once per machine and cached in the user's cache folder.

An *asset* is a payload — a dict of tensors and numbers, such as a pretrained state dict and
its source-task accuracy — that a deterministic function builds from a small config. The
fine-tuning reproductions all start from such a model; building it once per machine instead
of once per run is what this module is for.

Cache: ``$REGZOO_CACHE`` if set, else ``~/.cache/regzoo``; one file
``assets/<name>/<key>.pt`` per asset and config. The key is a hash of the name, the config,
the regzoo and torch versions and the source of the code that builds the payload (the import
closure of ``regzoo.assets`` and of the builder's module, as :mod:`regzoo.repro.provenance`
reads it), so an edit of the pretraining code rebuilds instead of reusing old weights. Files
are written atomically; a file that cannot be read, or whose content is not what its name
says, is rebuilt with a warning. Processes that ask for the same asset at once take a file
lock: the first builds, the others wait and load.

Caching never changes numbers: ``build`` runs on a forked RNG state and outside any torchrun
process group (:func:`regzoo.train.distributed.local_only`), so building and loading leave the
caller in the same state, and the registered builders train on the CPU, so a cached file holds
the same weights whichever device the run that needs it uses.

Registered assets (``regzoo assets list|build NAME|clear [NAME]``):

- ``digits_mlp``: an MLP pretrained with :func:`regzoo.repro.common.pretrain_mlp` on the
  source task (plain digits) of :func:`regzoo.data.transfer.digits_transfer` ``(seed)``; the
  starting point of the SORSA and SaRA reproductions. Config ``seed``, ``hidden``, ``epochs``,
  ``lr``, ``batch_size``.

- ``digit_oracle``, ``digit_dcgan``: the digits classifier that measures generated digits and
  the DCGANs of :mod:`regzoo.generative.assets`, which registers them.

Modules that register assets are listed in :data:`PLUGINS` and imported the first time the
registry is read, not at import time: a reproduction's code fingerprint
(:mod:`regzoo.repro.provenance`) then covers only the builders it imports itself.

A reproduction may cache assets of its own with :func:`cached` (BA-LoRA's watermarked MLP and
toy language model): they are listed and cleared like registered ones, but only registered
assets can be built by name. Building prints its one-off cost to stderr.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import importlib
import importlib.util
import io
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch

import regzoo
from regzoo.train.checkpoint import atomic_write_bytes
from regzoo.train.distributed import local_only

FORMAT = 1
"""Version of the cache file layout (the envelope around the payload)."""
ENVELOPE_KEYS = frozenset({"format", "name", "key", "config", "versions", "created", "payload"})
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

Payload = dict[str, Any]


def cache_dir() -> Path:
    """The user's regzoo cache folder: ``$REGZOO_CACHE`` if set, else ``~/.cache/regzoo``."""
    override = os.environ.get("REGZOO_CACHE")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "regzoo"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"asset name must be lower-case letters, digits and '_' starting with "
                         f"a letter (it names a folder), got {name!r}")
    return name


def _config_json(name: str, config: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(config), sort_keys=True)
    except TypeError as error:
        raise ValueError(f"config of asset {name!r} must hold JSON values only (numbers, "
                         f"strings, lists/tuples, dicts): {error}") from None


def code_hash(modules: Sequence[str] = ()) -> str:
    """A hash of the source of ``regzoo.assets`` and ``modules`` with their import closures.

    Names outside ``regzoo`` (a test's builder, say) are skipped: only regzoo's own code is
    hashed.
    """
    from regzoo.repro.provenance import module_closure

    names: set[str] = set()
    for module in ("regzoo.assets", *modules):
        if module == "regzoo" or module.startswith("regzoo."):
            names.update(module_closure(module))
    digest = hashlib.sha256()
    for name in sorted(names):
        spec = importlib.util.find_spec(name)
        source = Path(spec.origin).read_bytes() if spec and spec.origin else b""
        digest.update(name.encode() + b"\0" + source + b"\0")
    return digest.hexdigest()[:16]


def versions() -> dict[str, str]:
    """The versions an asset's key depends on."""
    return {"regzoo": str(regzoo.__version__), "torch": str(torch.__version__)}


def cache_key(name: str, config: Mapping[str, Any], code: Sequence[str] = ()) -> str:
    """The cache key of asset ``name`` under ``config``: name, config, versions and code."""
    record = {"name": _check_name(name), "config": json.loads(_config_json(name, config)),
              "versions": versions(), "code": code_hash(code)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def asset_path(name: str, key: str) -> Path:
    """Where asset ``name`` with ``key`` is cached."""
    return cache_dir() / "assets" / _check_name(name) / f"{key}.pt"


def _lock(path: Path) -> IO[str]:
    """The lock file beside ``path``, opened (the caller takes the lock and closes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path.with_name(f".{path.name}.lock"), "w")


def _read(path: Path, name: str, key: str, config: str | None = None) -> dict[str, Any]:
    """The envelope of a cache file; raises unless it holds asset ``name`` with ``key``.

    With ``config`` (JSON) the file must also have been built with that config.
    """
    envelope = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(envelope, dict) or set(envelope) != ENVELOPE_KEYS:
        found = sorted(envelope) if isinstance(envelope, dict) else type(envelope).__name__
        raise ValueError(f"expected the keys {sorted(ENVELOPE_KEYS)}, found {found}")
    if (envelope["format"], envelope["name"], envelope["key"]) != (FORMAT, name, key):
        raise ValueError(f"it holds format {envelope['format']!r}, asset "
                         f"{envelope['name']!r}, key {envelope['key']!r}")
    if config is not None and envelope["config"] != config:
        raise ValueError(f"it was built with the config {envelope['config']}")
    if not isinstance(envelope["payload"], dict):
        raise ValueError("its payload is not a dict")
    return envelope


def _reason(error: Exception) -> str:
    """One line saying why a cache file is unusable (torch's messages run over many lines)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _build(name: str, build: Callable[[], Payload],
           check: Callable[[Payload], object] | None) -> Payload:
    print(f"building asset {name!r} (once per machine; later runs load it from "
          f"{cache_dir()})", file=sys.stderr, flush=True)
    started = time.perf_counter()
    # A forked RNG and no process group: building leaves the caller as loading would.
    with torch.random.fork_rng(devices=[]), local_only():
        payload = build()
    print(f"built asset {name!r} in {time.perf_counter() - started:.0f} s", file=sys.stderr,
          flush=True)
    if not isinstance(payload, dict):
        raise TypeError(f"the builder of asset {name!r} returned {type(payload).__name__}, "
                        "expected a dict of tensors and numbers")
    _check(check, payload)
    return payload


def _check(check: Callable[[Payload], object] | None, payload: Payload) -> None:
    """Run ``check`` on a forked RNG state (building a model to check draws random weights)."""
    if check is not None:
        with torch.random.fork_rng(devices=[]):
            check(payload)


def cached(name: str, config: Mapping[str, Any], build: Callable[[], Payload], *,
           check: Callable[[Payload], object] | None = None, code: Sequence[str] = ()
           ) -> Payload:
    """Asset ``name`` under ``config``: loaded from the cache, or built by ``build()`` and cached.

    Args:
        name: the asset's name (a folder of the cache).
        config: every setting the payload depends on (JSON values); part of the key.
        build: makes the payload (a dict of tensors, numbers, strings); it must be a
            deterministic function of ``config``.
        check: raises when a payload is unusable (e.g. loads a state dict strictly; what it
            returns is ignored); a cached file that fails it is rebuilt with a warning.
        code: regzoo modules whose source shapes the payload besides ``regzoo.assets`` (the
            builder's module); their import closures join the key.

    When the cache folder cannot be written the payload is built and returned uncached, with
    a warning.
    """
    key = cache_key(name, config, code)
    path = asset_path(name, key)
    try:
        lock = _lock(path)
    except OSError as error:
        warnings.warn(f"asset {name!r}: cache folder {path.parent} is not usable ({error}); "
                      "building it without caching", RuntimeWarning, stacklevel=2)
        return _build(name, build, check)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            try:
                payload = _read(path, name, key, _config_json(name, config))["payload"]
                _check(check, payload)
                return payload
            # Whatever makes a cache file unusable (a truncated zip, a foreign pickle, wrong
            # keys, a state dict that does not fit), the remedy is the same: rebuild it.
            except Exception as error:
                warnings.warn(f"asset {name!r}: cached file {path} is unusable "
                              f"({_reason(error)}); rebuilding it", RuntimeWarning,
                              stacklevel=2)
        payload = _build(name, build, check)
        envelope = {"format": FORMAT, "name": name, "key": key,
                    "config": _config_json(name, config), "versions": versions(),
                    "created": dt.datetime.now().isoformat(timespec="seconds"),
                    "payload": payload}
        buffer = io.BytesIO()
        torch.save(envelope, buffer)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as error:
            warnings.warn(f"asset {name!r}: could not write {path} ({error}); using it "
                          "uncached", RuntimeWarning, stacklevel=2)
        return payload


# --- registered assets ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Asset:
    """A named asset ``regzoo assets build`` can make: its default config and builder."""

    name: str
    summary: str
    defaults: Mapping[str, Any]
    build: Callable[[Mapping[str, Any]], Payload]
    check: Callable[[Payload], object] | None = None


REGISTRY: dict[str, Asset] = {}
PLUGINS: tuple[str, ...] = ("regzoo.generative.assets",)
"""Modules that register assets when imported (see the module docstring)."""


def registry() -> dict[str, Asset]:
    """Every registered asset by name, after importing :data:`PLUGINS`."""
    for module in PLUGINS:
        importlib.import_module(module)
    return REGISTRY


def register(asset: Asset) -> Asset:
    """Add ``asset`` to the registry (a name is registered once)."""
    _check_name(asset.name)
    if asset.name in REGISTRY:
        raise ValueError(f"asset {asset.name!r} is already registered")
    REGISTRY[asset.name] = asset
    return asset


def registered(name: str) -> Asset:
    """The registered asset ``name``; the error lists the registered names."""
    known = registry()
    if name not in known:
        raise ValueError(f"unknown asset {name!r}; registered assets: {', '.join(known)}")
    return known[name]


def full_config(name: str, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The registered asset's defaults overridden by ``config`` (only known fields)."""
    asset = registered(name)
    unknown = sorted(set(config or {}) - set(asset.defaults))
    if unknown:
        raise ValueError(f"asset {name!r} has no config fields {unknown}; its fields: "
                         f"{', '.join(asset.defaults)}")
    return {**asset.defaults, **(config or {})}


def get(name: str, config: Mapping[str, Any] | None = None) -> Payload:
    """Registered asset ``name`` under its defaults overridden by ``config``, cached."""
    asset = registered(name)
    values = full_config(name, config)
    return cached(name, values, lambda: asset.build(values), check=asset.check,
                  code=(asset.build.__module__,))


def location(name: str, config: Mapping[str, Any] | None = None) -> Path:
    """Where :func:`get` caches registered asset ``name`` under ``config``."""
    values = full_config(name, config)
    return asset_path(name, cache_key(name, values, (registered(name).build.__module__,)))


# --- listing and clearing ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CachedAsset:
    """One cache file: its asset, key, config and size, or why it cannot be read."""

    name: str
    key: str
    path: Path
    size_bytes: int
    config: dict[str, Any] | None
    created: str | None
    error: str | None = None


def list_cached() -> list[CachedAsset]:
    """Every cached asset file, by name then key; unreadable files carry their ``error``."""
    root = cache_dir() / "assets"
    found = []
    for path in sorted(root.glob("*/*.pt")):
        name, key = path.parent.name, path.stem
        try:
            envelope = _read(path, name, key)
            found.append(CachedAsset(name, key, path, path.stat().st_size,
                                     json.loads(envelope["config"]), envelope["created"]))
        except Exception as error:  # listed as unreadable, whatever the cause
            found.append(CachedAsset(name, key, path, path.stat().st_size, None, None,
                                     _reason(error)))
    return found


def clear(name: str | None = None) -> int:
    """Delete the cached files of asset ``name`` (every asset when None); how many went."""
    root = cache_dir() / "assets"
    folders = [root / _check_name(name)] if name is not None else sorted(root.glob("*"))
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        removed += sum(1 for _ in folder.glob("*.pt"))
        for path in folder.glob("*.pt"):
            path.unlink()
        for path in folder.glob(".*.lock"):
            path.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


# --- the pretrained MLP -----------------------------------------------------------------------

MLP_FIELDS = ("seed", "hidden", "epochs", "lr", "batch_size")
"""The pretraining recipe of an MLP asset (:func:`regzoo.repro.common.pretrain_mlp`)."""


def pretrain_mlp_payload(task: Any, config: Mapping[str, Any]) -> Payload:
    """Pretrain an MLP on ``task`` (a :class:`regzoo.data.transfer.Task`) on the CPU.

    ``config`` holds :data:`MLP_FIELDS`. The payload: ``state_dict``, ``in_features``,
    ``num_classes``, ``hidden`` and ``source_accuracy`` (the task's test accuracy).
    """
    from regzoo.repro.common import pretrain_mlp

    missing = [f for f in MLP_FIELDS if f not in config]
    if missing:
        raise ValueError(f"an MLP asset's config needs {list(MLP_FIELDS)}; missing {missing}")
    hidden = tuple(config["hidden"])
    model, accuracy = pretrain_mlp(task, seed=config["seed"], hidden=hidden,
                                   epochs=config["epochs"], lr=config["lr"],
                                   batch_size=config["batch_size"], device="cpu")
    return {"state_dict": model.state_dict(), "in_features": task.num_features,
            "num_classes": task.num_classes, "hidden": list(hidden),
            "source_accuracy": accuracy}


def load_mlp(payload: Payload) -> Any:
    """The :class:`regzoo.models.MLP` of an MLP payload, on the CPU, in eval mode.

    Built on a forked RNG state: loading draws nothing from the caller's generator. Raises
    (``KeyError``, ``RuntimeError``) when the payload does not describe a matching MLP.
    """
    from regzoo.models.small import MLP

    with torch.random.fork_rng(devices=[]):
        model = MLP(int(payload["in_features"]), int(payload["num_classes"]),
                    hidden=tuple(int(h) for h in payload["hidden"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def _build_digits_mlp(config: Mapping[str, Any]) -> Payload:
    from regzoo.data.transfer import digits_transfer

    return pretrain_mlp_payload(digits_transfer(config["seed"]).source, config)


register(Asset(
    name="digits_mlp",
    summary="MLP pretrained with Adam on the digits source task of digits_transfer(seed) "
            "(SORSA's spec anchor: 64-256-256-10, test accuracy ≈ 0.97)",
    defaults={"seed": 0, "hidden": (256, 256), "epochs": 30, "lr": 1e-3, "batch_size": 64},
    build=_build_digits_mlp,
    check=load_mlp,
))
