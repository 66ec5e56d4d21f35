"""The common reproduction protocol (design.md §6): seeds, processes, resume, timing, artefacts.

``run_reproduction("elr", "quick")`` — what ``regzoo repro elr`` calls — builds the config
(preset plus ``--set`` overrides), splits the work into units (setting × arm × seed), runs them
in parallel processes with one torch thread each (``--jobs``, default the number of cores), or
one after another with DistributedDataParallel under ``torchrun``, then aggregates the metrics
(mean ± standard error over seeds), checks the claim, measures the step-time ratio and writes:

* ``<out>/progress.jsonl`` — one line per epoch of every unit, while it runs;
* ``<out>/units/<unit>.json`` and ``<out>/checkpoints/<unit>.pt`` — what ``--resume`` reuses;
* ``<out>/fingerprint.json`` — the code the run's units and checkpoints come from;
* ``<out>/result.json``, ``result.md``, ``<slug>.png`` and the ``done`` marker.

Quick and tiny runs go under ``runs/<slug>/<mode>-<time>/``; a ``--full`` run works there too and
copies its three artefacts to ``results/<slug>/``.

Provenance (:mod:`regzoo.repro.provenance`): every unit record carries the fingerprint of the
code and config it ran with. ``--resume`` reuses a unit only when that fingerprint is the
current one; a stale unit is set aside (``<unit>.json.stale``) and re-run, or kept with
``--reuse-stale`` and the result marked ``mixed``. A ``--full`` run refuses a checkout with
uncommitted changes under ``src/`` unless ``--allow-dirty`` (the result is then marked dirty).
"""

from __future__ import annotations

import concurrent.futures as futures
import datetime as dt
import importlib
import json
import logging
import math
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from regzoo.core.progress import progress_disabled
from regzoo.registry import card, results_dir
from regzoo.repro import provenance
from regzoo.repro.claims import MIN_SEEDS, Claim
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import Reproduction, Unit, UnitEnv, UnitResult
from regzoo.train.checkpoint import atomic_write_bytes
from regzoo.train.distributed import DistributedContext, init_distributed, local_only

SCHEMA_VERSION = 1
logger = logging.getLogger(__name__)


STUDIES = {"compose": "ELR, PS-KD and Weight Compander alone, in pairs and all three in one "
                      "training run (regzoo's composition claim)"}
"""Reproductions that span several methods: no card of their own, a result like any method's."""


def load_reproduction(slug: str) -> Reproduction:
    """The :class:`Reproduction` of ``slug``, a method or a :data:`STUDIES` entry.

    Its module is ``regzoo.repro.<slug>``.
    """
    if slug not in STUDIES and not card(slug).implemented:
        raise ValueError(f"{slug!r} is planned, not implemented yet: it has no reproduction")
    try:
        module = importlib.import_module(f"regzoo.repro.{slug}")
    except ModuleNotFoundError as error:
        if error.name == f"regzoo.repro.{slug}":
            raise ValueError(f"{slug!r} has no reproduction module regzoo.repro.{slug}") from None
        raise
    return module.REPRODUCTION


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[\d.eE+-]+|null)(?:,\s*(?:-?[\d.eE+-]+|null))*)\s*\]")


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically: keys in insertion order, NaN as null, number lists on one line."""
    text = json.dumps(_jsonable(payload), indent=2)
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",")
                            + "]", text)
    atomic_write_bytes(path, (text + "\n").encode())


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _summary(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, std, SE and n; a missing or non-finite value (JSON null) makes them NaN."""
    n = len(values)
    finite = all(v is not None and math.isfinite(v) for v in values)
    mean = statistics.fmean(values) if n and finite else math.nan  # type: ignore[arg-type]
    std = statistics.stdev(values) if n > 1 and finite else math.nan  # type: ignore[arg-type]
    return {"mean": mean, "std": std, "se": std / math.sqrt(n) if n > 1 else math.nan, "n": n,
            "values": list(values)}


def aggregate(records: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per setting and arm: every metric's mean/std/SE over seeds, and every curve's mean."""
    metrics: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for record in records:
        arm = metrics.setdefault(record["setting"], {}).setdefault(record["arm"], {})
        for name, value in record["metrics"].items():
            arm.setdefault(name, []).append(value)
        arm_curves = curves.setdefault(record["setting"], {}).setdefault(record["arm"], {})
        for name, curve in record.get("curves", {}).items():
            arm_curves.setdefault(name, []).append(curve)
    summary = {s: {a: {m: _summary(v) for m, v in arms.items()} for a, arms in by_arm.items()}
               for s, by_arm in metrics.items()}
    mean_curves: dict[str, Any] = {}
    for setting, by_arm in curves.items():
        for arm, named in by_arm.items():
            for name, runs in named.items():
                length = min(len(r) for r in runs)
                stacked = torch.tensor([[math.nan if v is None else v for v in r[:length]]
                                        for r in runs], dtype=torch.float64)
                se = stacked.std(0) / math.sqrt(len(runs)) if len(runs) > 1 else None
                mean_curves.setdefault(setting, {}).setdefault(arm, {})[name] = {
                    "mean": _rounded(stacked.mean(0).tolist()),
                    "se": None if se is None else _rounded(se.tolist())}
    return summary, mean_curves


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _git_state() -> tuple[str | None, bool | None]:
    """The checkout's commit and whether ``src/`` differs from it (untracked files count).

    ``None`` for the second when git cannot tell (not a checkout, git missing).
    """
    commit = _git("rev-parse", "HEAD") or None
    status = _git("status", "--porcelain", "--", ":/src")
    return commit, None if status is None else bool(status)


def _installed_version(package: str) -> str | None:
    """An optional package's version (None when absent), read without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, CPU, threads and device: the ``env`` section of ``result.json``."""
    import numpy
    import scipy

    from regzoo import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "numba": _installed_version("numba"),
        "regzoo": __version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads_per_process": torch.get_num_threads(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


class _ProgressLog:
    """Appends one JSON line per epoch to ``progress.jsonl`` (line-sized appends, any process)."""

    def __init__(self, path: Path, unit: Unit) -> None:
        self.path, self.unit = path, unit

    def __call__(self, record: Mapping[str, float]) -> None:
        line = json.dumps(_jsonable({"unit": self.unit.id, **record})) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)


def _execute_unit(slug: str, config: ReproConfig, unit: Unit, out: str, resume: bool,
                  device: str, progress: bool | None, threads: int | None,
                  fingerprint: dict[str, Any], stale_inputs: bool) -> dict[str, Any]:
    """Run one unit and write its record.

    The record carries the run's fingerprint; it is marked ``stale_inputs`` (never reused by a
    plain ``--resume``) when the unit may have read work of other code (``--reuse-stale`` on a
    folder whose code changed) or when the source changed while it ran.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    repro = load_reproduction(slug)
    out_path = Path(out)
    context = init_distributed(device)
    env = UnitEnv(
        context=context,
        checkpoint_path=str(out_path / "checkpoints" / f"{unit.id}.pt"),
        resume=resume,
        log=_ProgressLog(out_path / "progress.jsonl", unit),
        progress=progress,
        workdir=str(out_path),
    )
    started = time.perf_counter()
    result: UnitResult = repro.run_unit(config, unit, env)
    changed_meanwhile = provenance.fingerprint(slug, config.as_dict(), repro.unit_axes) != (
        fingerprint)
    record = {"setting": unit.setting, "arm": unit.arm, "seed": unit.seed,
              "git_commit": _git_state()[0], "fingerprint": fingerprint,
              **({"stale_inputs": True} if stale_inputs or changed_meanwhile else {}),
              "metrics": result.metrics, "curves": _rounded_curves(result.curves),
              "seconds": time.perf_counter() - started}
    if context.is_main:
        write_json(out_path / "units" / f"{unit.id}.json", record)
    return record


def _rounded(values: Sequence[float]) -> list[float]:
    """Curve values at 6 decimals: plots need no more, and result.json stays reviewable."""
    return [round(float(v), 6) for v in values]


def _rounded_curves(curves: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    return {name: _rounded(values) for name, values in curves.items()}


def _committed_status(slug: str) -> str:
    """The status line of ``slug``'s committed full result (a study's: from its result file)."""
    if slug not in STUDIES:
        return card(slug).status_line()
    path = results_dir() / slug / "result.json"
    if not path.is_file():
        return "implemented"
    from regzoo.repro.claims import status_line

    result = json.loads(path.read_text())
    return status_line(result) + (" · stale" if result_changes(result) else "")


def _default_out(slug: str, mode: str, resume: bool) -> Path:
    root = Path("runs") / slug
    if resume:
        candidates = sorted(p for p in root.glob(f"{mode}-*")
                            if not (p / "done").exists() and (p / "units").is_dir()
                            and any((p / "units").iterdir()))
        if candidates:
            return candidates[-1]
        raise ValueError(f"--resume found no unfinished run under {root}/{mode}-*; pass --out DIR")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{mode}-{stamp}"


def _prepare_out(out: Path, config: ReproConfig, resume: bool, is_main: bool,
                 unit_axes: tuple[str, ...]) -> None:
    saved = out / "config.json"
    if resume and saved.exists():
        before, now = json.loads(saved.read_text()), _jsonable(config.as_dict())
        # Fields the saved config lacks were added to the code since: the finished units ran
        # without them. Every unit record names the commit it was computed at.
        changed = sorted(k for k in set(before) | set(now)
                         if k in before and before.get(k) != now.get(k))
        extended = all(k in unit_axes and set(before.get(k) or ()) <= set(now.get(k) or ())
                       for k in changed)
        if not extended:
            raise ValueError(f"--resume: {saved} was written with another config (fields "
                             f"{changed}); resume with the same --set/--seeds, extend only "
                             f"{list(unit_axes)}, or use a new --out")
        added = sorted(set(now) - set(before))
        if changed or added:
            logger.warning("--resume extends %s and adds fields %s of %s; finished units are "
                           "reused", changed, added, out)
    elif (out / "units").exists() and any((out / "units").iterdir()):
        raise ValueError(f"{out} already holds finished units; pass --resume to continue that "
                         "run, or choose another --out (nothing is overwritten silently)")
    if is_main:
        (out / "units").mkdir(parents=True, exist_ok=True)
        write_json(saved, config.as_dict())
        (out / "done").unlink(missing_ok=True)


def run_reproduction(
    slug: str,
    mode: str = "quick",
    *,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, str] | None = None,
    device: str = "cpu",
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    jobs: int | None = None,
    progress: bool | None = None,
    command: str | None = None,
    allow_dirty: bool = False,
    reuse_stale: bool = False,
) -> dict[str, Any]:
    """Run ``slug``'s reproduction; return the ``result.json`` payload (also written to disk).

    Args:
        slug: the method.
        mode: ``tiny``, ``quick`` (default) or ``full``.
        seeds: training seeds replacing the preset's.
        overrides: ``{field: text}`` config overrides (``--set field=value``).
        device: ``cpu`` or ``cuda`` (``cuda:K`` too).
        out: output folder (default ``runs/<slug>/<mode>-<time>``).
        resume: reuse finished units and checkpoints in ``out``.
        jobs: parallel processes (default: cores; 1 on CUDA and under torchrun).
        progress: show progress bars (``None``: only on a terminal).
        command: the command line to record (default: ``sys.argv``).
        allow_dirty: let a ``full`` run start from uncommitted source (marked dirty).
        reuse_stale: with ``resume``, keep units whose code changed since (marked mixed).
    """
    wall_start = time.perf_counter()
    if reuse_stale and not resume:
        raise ValueError("--reuse-stale keeps stale units of a resumed run: pass it with "
                         "--resume, or drop it")
    commit, dirty = _git_state()
    if mode == "full" and dirty is not False and not allow_dirty:
        why = ("has uncommitted changes under src/" if dirty else
               "cannot be checked (no git checkout)")
        raise ValueError(f"a --full result must come from committed code, but the source {why};"
                         " commit first, or pass --allow-dirty (the result is marked dirty)")
    repro = load_reproduction(slug)
    config = repro.config_type.preset(mode).with_overrides(overrides or {})
    if seeds:
        config = config.with_overrides({"seeds": ",".join(map(str, seeds))})
    current = provenance.fingerprint(slug, config.as_dict(), repro.unit_axes)
    context = init_distributed(device)
    out_path = Path(out) if out is not None else _default_out(slug, mode, resume)
    if out_path.exists() and not out_path.is_dir():
        raise ValueError(f"--out {out_path} is a file; give a folder")
    if context.enabled:
        obj: list[Any] = [str(out_path)]
        torch.distributed.broadcast_object_list(obj, src=0)
        out_path = Path(obj[0])
    _prepare_out(out_path, config, resume, context.is_main, repro.unit_axes)
    if context.enabled:
        torch.distributed.barrier()

    units = repro.units(config)
    duplicated = sorted({u.id for u in units if sum(v.id == u.id for v in units) > 1})
    if duplicated:
        raise ValueError(f"the config repeats units {duplicated[:3]}: give each seed, arm and "
                         "setting once")
    records, pending, kept_stale, stale_inputs = _reusable_units(
        out_path, units, current, resume, reuse_stale, context.is_main)
    if context.enabled:
        torch.distributed.barrier()  # no rank resumes a checkpoint rank 0 is setting aside
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive number of processes, got {jobs!r}")
    parallel = context.world_size == 1 and context.device.type == "cpu"
    jobs = (jobs or os.cpu_count() or 1) if parallel else 1
    jobs = max(1, min(jobs, len(pending))) if pending else 1
    logger.info("%s %s: %d units (%d to run) with %d process(es) -> %s", slug, mode, len(units),
                len(pending), jobs, out_path)
    bar = tqdm(total=len(units), initial=len(records), desc=f"{slug} {mode}", unit="run",
               disable=progress_disabled(progress, context.is_main),
               dynamic_ncols=True)
    if jobs == 1:
        previous_threads = torch.get_num_threads()
        if parallel:
            torch.set_num_threads(1)
        try:
            for unit in pending:
                records[unit.id] = _execute_unit(slug, config, unit, str(out_path), resume,
                                                 device, progress, None, current, stale_inputs)
                bar.update()
        finally:
            torch.set_num_threads(previous_threads)
    else:
        # spawn, not fork: a forked child of a process that already ran torch ops can deadlock
        # in its thread pools, and CUDA cannot be forked at all.
        ctx = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            submitted = {
                pool.submit(_execute_unit, slug, config, unit, str(out_path), resume, device,
                            False, 1, current, stale_inputs): unit
                for unit in pending
            }
            for future in futures.as_completed(submitted):
                try:
                    records[submitted[future].id] = future.result()
                except BaseException:
                    # Fail now, not after every queued unit: finished units stay on disk.
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
                bar.update()
    bar.close()

    judged = judge(repro, config, [records[u.id] for u in units])
    timing: dict[str, Any] = {}
    env = environment(context.device)
    if context.is_main:
        previous_threads = torch.get_num_threads()
        if context.device.type == "cpu":
            torch.set_num_threads(1)  # as the units ran: one thread, the fastest for small models
        try:
            with local_only():
                timing = repro.timing(config, context.device)
        finally:
            torch.set_num_threads(previous_threads)
    if provenance.fingerprint(slug, config.as_dict(), repro.unit_axes) != current:
        logger.warning("the source of %s changed while it ran: the result is marked dirty", slug)
        dirty = True
    smoke = len(config.seeds) < MIN_SEEDS
    # A smoke run quotes the committed full result's status (its card shows "implemented" when
    # there is none).
    committed_status = _committed_status(slug) if smoke else None
    if committed_status in ("implemented", "planned"):
        committed_status = None

    result = {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "slug": slug,
            "title": repro.title,
            "mode": mode,
            "command": command or "regzoo " + " ".join(sys.argv[1:]),
            "config": config.as_dict(),
            "seeds": list(config.seeds),
            "regzoo_version": env["regzoo"],
            "git_commit": commit,
            "git_dirty": dirty,
            "fingerprint": current,
            "mixed": bool(kept_stale) or any(r.get("stale_inputs") for r in records.values()),
            "stale_units_kept": sorted({*kept_stale, *(uid for uid, r in records.items()
                                                       if r.get("stale_inputs"))}),
            "smoke": smoke,
            "committed_status": committed_status,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": time.perf_counter() - wall_start,
            "world_size": context.world_size,
            "backend": torch.distributed.get_backend() if context.enabled else None,
            "status": "completed",
        },
        "metrics": judged["metrics"],
        "claim": judged["claim"],
        "secondary_claims": judged["secondary_claims"],
        "timing": timing,
        "env": env,
    }
    if context.is_main:
        _write_artefacts(repro, result, out_path, mode)
    if context.enabled:
        # Every rank returns once the result is on disk, and the ranks leave together rather
        # than one exiting while rank 0 still times and writes.
        torch.distributed.barrier()
    return result


def _load_unit_record(path: Path, unit: Unit) -> dict[str, Any]:
    """A finished unit's record; ``ValueError`` naming the file when it is corrupt or foreign."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable JSON unit record ({error})") from None
    if not isinstance(record, dict) or not {"setting", "arm", "seed", "metrics"} <= set(record):
        raise ValueError(f"{path} is not a unit record (it lacks setting, arm, seed or metrics)")
    found = (record["setting"], record["arm"], record["seed"])
    if found != (unit.setting, unit.arm, unit.seed):
        raise ValueError(f"{path} records unit {found}, not {unit.id}: a foreign record")
    return record


_RUN_RECORDS = frozenset({"config.json", "fingerprint.json", "progress.jsonl", "done",
                          "result.json", "result.md"})
"""Top-level files of a run folder that record the run rather than hold work units share."""


def _read_json(path: Path) -> Any:
    """``path``'s JSON, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _set_aside(path: Path) -> None:
    """Rename ``path`` to ``<path>.stale`` (``.stale.2``, … when taken): nothing is deleted."""
    if not path.exists():
        return
    target, number = path.with_name(path.name + ".stale"), 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.stale.{number}")
    path.replace(target)


def _reusable_units(out: Path, units: Sequence[Unit], current: dict[str, Any], resume: bool,
                    reuse_stale: bool, is_main: bool
                    ) -> tuple[dict[str, dict[str, Any]], list[Unit], list[str], bool]:
    """Which finished units to reuse and which units to run.

    Returns the reusable records, the units to run, the stale units kept, and whether the units
    to run may read work of other code (``reuse_stale`` on a folder whose code changed).

    A unit is reused when its record is sound and its fingerprint is the current code's. A
    corrupt or foreign record is reported by file name, set aside and its unit re-run; a stale
    record is set aside unless ``reuse_stale``, and so, when the run folder's code changed, are
    the checkpoints of the units to run and the work units share (``shared_once`` caches).
    """
    records: dict[str, dict[str, Any]] = {}
    pending: list[Unit] = []
    stale: dict[str, list[str]] = {}
    kept: list[str] = []
    saved = out / "fingerprint.json"
    folder_changed = resume and bool(provenance.changed_modules(_read_json(saved), current))
    for unit in units:
        done_file = out / "units" / f"{unit.id}.json"
        if not (resume and done_file.exists()):
            pending.append(unit)
            continue
        try:
            record = _load_unit_record(done_file, unit)
        except ValueError as error:
            logger.error("%s; setting it aside and re-running that unit", error)
            if is_main:
                _set_aside(done_file)
            pending.append(unit)
            continue
        changed = (["<stale inputs>"] if record.get("stale_inputs") else
                   provenance.changed_modules(record.get("fingerprint"), current))
        if not changed or reuse_stale:
            records[unit.id] = record
            if changed:
                kept.append(unit.id)
            continue
        stale[unit.id] = changed
        pending.append(unit)
        if is_main:
            _set_aside(done_file)
            _set_aside(out / "checkpoints" / f"{unit.id}.pt")
    if stale:
        modules = sorted({m for names in stale.values() for m in names})
        logger.warning("--resume: %d unit(s) ran with other code and are re-run: %s; changed: "
                       "%s (--reuse-stale keeps them and marks the result mixed)",
                       len(stale), ", ".join(sorted(stale)), ", ".join(modules))
    for unit in pending if folder_changed else ():
        checkpoint = out / "checkpoints" / f"{unit.id}.pt"
        if reuse_stale and checkpoint.exists():
            kept.append(unit.id)  # it resumes from partial work of other code
        elif is_main:
            _set_aside(checkpoint)
    if folder_changed and not reuse_stale and is_main:
        # Work shared by units (shared_once caches, a pretrained model) came from other code.
        for path in sorted(out.iterdir()):
            if path.is_file() and path.name not in _RUN_RECORDS and path.suffix != ".stale":
                _set_aside(path)
    if kept:
        logger.warning("--reuse-stale keeps %d unit(s) computed with other code; the result is "
                       "marked mixed: %s", len(kept), ", ".join(kept))
    stale_inputs = bool(folder_changed) and reuse_stale
    if is_main and not stale_inputs:
        # With --reuse-stale on changed code the folder keeps the old fingerprint, so a later
        # plain --resume still sees the change.
        out.mkdir(parents=True, exist_ok=True)
        write_json(saved, current)
    return records, pending, kept, stale_inputs


def judge(repro: Reproduction, config: ReproConfig,
          records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Derived arms, aggregates, every claim's verdict and the note, from trained units' records.

    Records of derived arms in ``records`` are dropped and derived anew (written before the
    ``derived`` flag existed, they are the ones without ``seconds``), so a committed result
    re-judged with the current claims and rule (``regzoo report --render``) needs no training.
    """
    trained = [r for r in records if not r.get("derived") and "seconds" in r]
    derived = [{**r, "derived": True} for r in repro.derived_arms(config, trained)]
    ordered = trained + derived
    summary, curves = aggregate(ordered)
    headline = evaluate_claim(repro.claim(config), ordered)
    headline["note"] = repro.note(config, headline, summary)
    return {"metrics": {"per_seed": ordered, "aggregate": summary, "curves": curves},
            "claim": headline,
            "secondary_claims": [evaluate_claim(c, ordered)
                                 for c in repro.secondary_claims(config)]}


def result_changes(result: Mapping[str, Any]) -> list[str]:
    """What changed in the code since ``result`` ran (empty: its fingerprint is current).

    ``<dirty>`` when it ran from uncommitted source, ``<mixed>`` when it kept stale units,
    changed module names, ``<config>``, or ``<no fingerprint>`` for a result written before
    fingerprints existed.
    """
    run = result["run"]
    repro = load_reproduction(run["slug"])
    try:
        config = repro.config_type.from_dict(run["config"]).as_dict()
    except (TypeError, ValueError):
        return ["<config>"]
    changes = provenance.changed_modules(
        run.get("fingerprint"), provenance.fingerprint(run["slug"], config, repro.unit_axes))
    if run.get("git_dirty") is not False:
        changes.insert(0, "<dirty>")
    if run.get("mixed"):
        changes.insert(0, "<mixed>")
    return changes


def evaluate_claim(claim: Claim, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``claim``'s verdict from the per-unit records (its setting, its two arms, every seed)."""
    by_seed = {arm: {r["seed"]: r["metrics"][claim.metric] for r in records
                     if r["setting"] == claim.setting and r["arm"] == arm}
               for arm in (claim.method, claim.baseline)}
    for arm, values in by_seed.items():
        if not values:
            raise ValueError(f"claim {claim.statement!r} names arm {arm!r} in setting "
                             f"{claim.setting!r}, but no unit ran it")
    return claim.evaluate(by_seed[claim.method], by_seed[claim.baseline])


def render_artefacts(repro: Reproduction, result: dict[str, Any], folder: Path) -> None:
    """Write ``result.json``, ``result.md`` and ``<slug>.png`` of ``result`` into ``folder``."""
    from regzoo.repro.report import plot_result, result_markdown

    write_json(folder / "result.json", result)
    atomic_write_bytes(folder / "result.md", result_markdown(repro, result).encode())
    plot_result(repro, result, folder / f"{repro.slug}.png")


def _write_artefacts(repro: Reproduction, result: dict[str, Any], out: Path, mode: str) -> None:
    render_artefacts(repro, result, out)
    if mode == "full" and result["run"]["smoke"]:
        logger.warning("a run with fewer than %d seeds is a smoke run: %s is not copied to "
                       "results/", MIN_SEEDS, out)
    elif mode == "full":
        target = results_dir() / repro.slug
        target.mkdir(parents=True, exist_ok=True)
        for name in ("result.json", "result.md", f"{repro.slug}.png"):
            if (out / name).exists():
                shutil.copyfile(out / name, target / name)
        result["run"]["results_dir"] = str(target)
    atomic_write_bytes(out / "done", b"")
    result["run"]["out"] = str(out)


def validate_result(result: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if ``result`` lacks a section or field of the schema."""
    required = {
        "run": ("slug", "title", "mode", "command", "config", "seeds", "regzoo_version",
                "git_commit", "created_at", "wall_seconds", "status"),
        "metrics": ("per_seed", "aggregate", "curves"),
        "claim": ("statement", "metric", "setting", "method", "baseline", "margin",
                  "direction", "observed", "verdict", "note"),
        "timing": (),
        "env": ("python", "torch", "numpy", "platform", "cpu_count", "device"),
    }
    if result.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"schema_version must be {SCHEMA_VERSION}, got "
                         f"{result.get('schema_version')!r}")
    for section, keys in required.items():
        if section not in result:
            raise ValueError(f"result has no {section!r} section")
        missing = [k for k in keys if k not in result[section]]
        if missing:
            raise ValueError(f"result[{section!r}] lacks {missing}")
    if result["claim"]["verdict"] not in ("reproduced", "not_reproduced", "inconclusive"):
        raise ValueError(f"unknown verdict {result['claim']['verdict']!r}")


__all__ = ["DistributedContext", "load_reproduction", "run_reproduction", "validate_result"]
