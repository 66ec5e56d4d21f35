"""The common reproduction protocol (design.md §6): seeds, processes, resume, timing, artefacts.

``run_reproduction("elr", "quick")`` — what ``regzoo repro elr`` calls — builds the config
(preset plus ``--set`` overrides), splits the work into units (setting × arm × seed), runs them
in parallel processes with one torch thread each (``--jobs``, default the number of cores), or
one after another with DistributedDataParallel under ``torchrun``, then aggregates the metrics
(mean ± standard error over seeds), checks the claim, measures the step-time ratio and writes:

* ``<out>/progress.jsonl`` — one line per epoch of every unit, while it runs;
* ``<out>/units/<unit>.json`` and ``<out>/checkpoints/<unit>.pt`` — what ``--resume`` reuses;
* ``<out>/result.json``, ``result.md``, ``<slug>.png`` and the ``done`` marker.

Quick and tiny runs go under ``runs/<slug>/<mode>-<time>/``; a ``--full`` run works there too and
copies its three artefacts to ``results/<slug>/``.
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

from regzoo.registry import card, results_dir
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import Claim, Reproduction, Unit, UnitEnv, UnitResult
from regzoo.train.checkpoint import atomic_write_bytes
from regzoo.train.distributed import DistributedContext, init_distributed, local_only
from regzoo.train.loop import progress_disabled

SCHEMA_VERSION = 1
logger = logging.getLogger(__name__)


def load_reproduction(slug: str) -> Reproduction:
    """The :class:`Reproduction` of ``slug`` (module ``regzoo.repro.<slug>``)."""
    method = card(slug)
    if not method.implemented:
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
    """The checkout's commit and whether its tracked source differs from it, at the run's start."""
    commit = _git("rev-parse", "HEAD") or None
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ":/src")
    return commit, None if status is None else bool(status)


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
                  device: str, progress: bool | None, threads: int | None) -> dict[str, Any]:
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
    record = {"setting": unit.setting, "arm": unit.arm, "seed": unit.seed,
              "git_commit": _git_state()[0],
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
    """
    wall_start = time.perf_counter()
    commit, dirty = _git_state()
    repro = load_reproduction(slug)
    config = repro.config_type.preset(mode).with_overrides(overrides or {})
    if seeds:
        config = config.with_overrides({"seeds": ",".join(map(str, seeds))})
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
    records: dict[str, dict[str, Any]] = {}
    pending: list[Unit] = []
    for unit in units:
        done_file = out_path / "units" / f"{unit.id}.json"
        if resume and done_file.exists():
            records[unit.id] = json.loads(done_file.read_text())
        else:
            pending.append(unit)
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
                                                 device, progress, None)
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
                            False, 1): unit
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

    ordered = [records[u.id] for u in units]
    ordered += repro.derived_arms(config, ordered)
    summary, curves = aggregate(ordered)
    verdict = evaluate_claim(repro.claim(config), ordered)
    verdict["note"] = repro.note(config, verdict, summary)
    secondary = [evaluate_claim(c, ordered) for c in repro.secondary_claims(config)]
    timing: dict[str, Any] = {}
    env = environment(context.device)
    if context.is_main:
        with local_only():
            timing = repro.timing(config, context.device)

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
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": time.perf_counter() - wall_start,
            "world_size": context.world_size,
            "status": "completed",
        },
        "metrics": {"per_seed": ordered, "aggregate": summary, "curves": curves},
        "claim": verdict,
        "secondary_claims": secondary,
        "timing": timing,
        "env": env,
    }
    if context.is_main:
        _write_artefacts(repro, result, out_path, mode)
    return result


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
    if mode == "full":
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
