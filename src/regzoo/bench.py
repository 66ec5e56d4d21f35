"""``regzoo bench --all``: every benchmark script in one run, collected into one markdown file.

Each script under ``benchmarks/`` measures its method side by side with what it is compared to
(the plain training step, a peer library on the same problem, the paper's formula written in a
few lines) and prints markdown tables of ratios with a quality check per row. Those tables stay
the single source of each benchmark's numbers; this module only runs the scripts, one process
each, one after another, with one thread (``OMP_NUM_THREADS=1``), so no two benchmarks share the
machine, and writes them into one file: an index (script, the methods whose card names it, wall
time, exit status) followed by each script's tables under its name, with the commit, whether the
tree was clean and the machine line on top. The committed ``results/benchmarks.md`` comes from a
clean tree at one commit, like the reproductions' results.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from regzoo.registry import cards

logger = logging.getLogger(__name__)

BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
"""The checkout's ``benchmarks/`` folder (it ships with the source, not the wheel)."""


@dataclass(frozen=True)
class BenchmarkRun:
    """One script's run: its name, exit status, wall seconds and what it printed."""

    name: str
    returncode: int
    seconds: float
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def benchmark_scripts(folder: Path = BENCHMARKS_DIR) -> list[Path]:
    """The runnable scripts of ``folder`` (``*.py`` not starting with ``_``), by name."""
    if not folder.is_dir():
        raise ValueError(f"no benchmarks folder at {folder} (benchmarks/ ships with the source "
                         "checkout: run from a clone installed with pip install -e .)")
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def methods_by_script() -> dict[str, list[str]]:
    """For each benchmark name, the implemented methods whose card names it."""
    found: dict[str, list[str]] = {}
    for method in cards():
        if method.implemented:
            found.setdefault(method.extras.get("benchmark", method.slug), []).append(method.slug)
    return found


def run_script(script: Path, *, quick: bool, timeout: float) -> BenchmarkRun:
    """Run one benchmark in its own process with one thread; a timeout counts as a failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, str(script), *(["--quick"] if quick else [])]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=script.parent.parent)
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as stopped:
        returncode = -1
        stdout = stopped.stdout.decode() if isinstance(stopped.stdout, bytes) else ""
        stderr = f"timed out after {timeout:.0f} s"
    return BenchmarkRun(script.stem, returncode, time.perf_counter() - start, stdout, stderr)


def git_state(folder: Path = BENCHMARKS_DIR) -> tuple[str | None, bool | None]:
    """The checkout's commit and whether ``src/`` or ``benchmarks/`` differ from it."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=folder,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--", ":/src", ":/benchmarks")
    return git("rev-parse", "HEAD") or None, None if status is None else bool(status)


def render(runs: list[BenchmarkRun], *, quick: bool, commit: str | None,
           dirty: bool | None) -> str:
    """The markdown of ``results/benchmarks.md``: header, index, each script's tables."""
    users = methods_by_script()
    tree = {False: "clean", True: "dirty (uncommitted changes)", None: "unknown"}[dirty]
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        "# Benchmarks: every method against its plain step, its peers and its paper formula",
        "",
        f"`regzoo bench --all{' --quick' if quick else ''}` at commit `{commit or 'unknown'}` "
        f"({tree} tree), each script in its own process with one thread, one after another; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, load average {load} (1, 5, 15 min) when the file was "
        "written. Ratios were measured side by side inside each script (steps interleaved "
        "round-robin), so other load slows both arms alike; absolute times are those of this "
        "machine at that load only.",
        "",
        "| benchmark | methods | wall s | status |",
        "|---|---|---:|---|",
    ]
    for run in runs:
        status = "ok" if run.ok else f"**failed** (exit {run.returncode})"
        methods = ", ".join(users.get(run.name, [])) or "(shared asset)"
        lines.append(f"| [{run.name}](#{run.name}) | {methods} | {run.seconds:.0f} | {status} |")
    for run in runs:
        lines += ["", f"## {run.name}", "", f"`benchmarks/{run.name}.py"
                  f"{' --quick' if quick else ''}`, {run.seconds:.0f} s", ""]
        lines.append(run.stdout.rstrip() or "(no output)")
        if not run.ok:
            tail = "\n".join(run.stderr.rstrip().splitlines()[-15:])
            lines += ["", "```text", tail, "```"]
    return "\n".join(lines) + "\n"


def run_all(out: Path, *, quick: bool, timeout: float = 1800.0, allow_dirty: bool = False,
            folder: Path = BENCHMARKS_DIR) -> list[BenchmarkRun]:
    """Run every script of ``folder`` and write the collected markdown to ``out``.

    Refuses a tree with uncommitted changes in ``src/`` or ``benchmarks/`` unless
    ``allow_dirty`` (the file then says so), so a committed table names the code it measured.
    The file is rewritten after every script, so an interrupted run keeps what it measured.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout}")
    scripts = benchmark_scripts(folder)
    commit, dirty = git_state(folder)
    if dirty is not False and not allow_dirty:
        raise ValueError("src/ or benchmarks/ has uncommitted changes (or git cannot tell): "
                         "commit first, or pass --allow-dirty (the table then says dirty)")
    runs = []
    for index, script in enumerate(scripts, 1):
        logger.info("[%d/%d] %s ...", index, len(scripts), script.stem)
        run = run_script(script, quick=quick, timeout=timeout)
        logger.info("    %s in %.0f s", "ok" if run.ok else "FAILED", run.seconds)
        runs.append(run)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(runs, quick=quick, commit=commit, dirty=dirty))
    return runs
