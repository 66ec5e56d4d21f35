"""The prepared device check of issue 15: regzoo's torch paths on an accelerator against CPU.

One script for a short device session (about 5 minutes on ``--device cuda``, estimated from the
CPU rows on the 2-core machine; ``--quick`` and ``--repeats`` shorten it), three sections:

* **Sparse OT**: one batched call of B problems (Gaussian clouds, squared Euclidean cost scaled
  to max 1, γ = 1, k = 5, tol 1e-9) with ``solver="torch"`` on the device, against regzoo's CPU
  default (numba or scipy, one problem after another) and POT's ``smooth_ot_semi_dual`` (CPU:
  it has no GPU path), B calls each. Quality: the worst relative gap of the semi-dual value
  S(α) to the CPU solver's.
* **CoLiDE**: the torch loop on the device (float64) against the NumPy loop on CPU and the PyPI
  ``dagma`` (NumPy, CPU), same ER4 data (n = 1000) and the same fixed 4 × ``iters`` Adam
  iterations; SHD after the same post-processing.
* **HyDe**: each torch denoiser on a float32 cube on the device against the same call on CPU,
  and hyde-images' implementation on the device where it runs there (its OTVCA denoises with
  scikit-image, on CPU, so only its products run on the device); PSNR of each.

Every row runs in its own ``try``: an error is written into its row and the script goes on, so
one session's output says all that ran. Times are wall seconds, the median of ``--repeats``
after one warm-up call, with the device synchronised around each call; CPU calls run on one
thread (regzoo's benchmark convention; ``--cpu-threads`` changes it). Ratios > 1 mean the
device is faster.

Run on a device machine: ``python benchmarks/device/cuda_vs_cpu.py --device cuda --out
$OUT/cuda_vs_cpu.md``; ``--device cpu --quick`` is the smoke run (every row, CPU against CPU,
small sizes, under a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from regzoo.data.hyperspectral import add_noise, psnr, synthetic_cube
from regzoo.data.sem import count_accuracy, simulate_linear_sem
from regzoo.methods import hyde as regzoo_hyde
from regzoo.methods.colide import CoLiDE, to_dag
from regzoo.methods.sparse_ot import sparsity_constrained_ot
from regzoo.train.timing import machine_line

GAMMA, K, TOL = 1.0, 5, 1e-9
COLIDE_S = (1.0, 0.9, 0.8, 0.7)


def timed(call: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """Median wall seconds of ``call`` over ``repeats`` calls after one warm-up, and its output."""
    out = call()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        out = call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def guarded(label: str, row: Callable[[], str], columns: int) -> str:
    """``row()``, or a row that names the error (the traceback goes to stderr)."""
    try:
        return row()
    except Exception as error:  # one failing row must not end the device session
        traceback.print_exc()
        message = f"{type(error).__name__}: {error}".replace("|", "/").replace("\n", " ")[:160]
        return f"| {label} | error: {message} |" + " |" * (columns - 2)


def ot_problems(batch: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``batch`` problems of m × m: uniform marginals, cost scaled to max 1 (as benchmarks/)."""
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(batch, m, 2)), rng.normal(size=(batch, m, 2)) + 1.0
    C = ((xs[:, :, None, :] - xt[:, None, :, :]) ** 2).sum(-1)
    C /= C.max(axis=(1, 2), keepdims=True)
    uniform = np.full((batch, m), 1.0 / m)
    return uniform, uniform.copy(), C


def sparse_ot_row(batch: int, m: int, device: torch.device, repeats: int) -> str:
    a, b, C = ot_problems(batch, m)

    def on_device() -> np.ndarray:
        _, result = sparsity_constrained_ot(
            torch.from_numpy(a).to(device), torch.from_numpy(b).to(device),
            torch.from_numpy(C).to(device), K, GAMMA, tol=TOL, log=True, solver="torch")
        return result.objectives.cpu().numpy()

    def on_cpu() -> np.ndarray:
        return np.array([sparsity_constrained_ot(a[i], b[i], C[i], K, GAMMA, tol=TOL,
                                                 log=True)[1].objectives for i in range(batch)])

    def pot() -> None:
        import ot

        with contextlib.redirect_stdout(io.StringIO()):
            for i in range(batch):
                ot.smooth.smooth_ot_semi_dual(a[i], b[i], C[i], GAMMA,
                                              reg_type="sparsity_constrained", max_nz=K,
                                              stopThr=TOL)

    device_s, values = timed(on_device, device, repeats)
    cpu_s, reference = timed(on_cpu, torch.device("cpu"), repeats)
    pot_s, _ = timed(pot, torch.device("cpu"), repeats)
    gap = float(np.max(np.abs(values - reference) / np.abs(reference)))
    return (f"| {batch} × {m}×{m} | {device_s:.3g} | {cpu_s:.3g} | {pot_s:.3g} | "
            f"{cpu_s / device_s:.2f} | {pot_s / device_s:.2f} | {gap:.1e} |")


def colide_row(d: int, iters: int, device: torch.device, repeats: int) -> str:
    sem = simulate_linear_sem(d, 1000, 4 * d, variance="nv", seed=0)
    budget = {"T": 4, "s": COLIDE_S, "warm_iter": iters, "max_iter": iters, "checkpoint": 10**9}
    X_device = torch.from_numpy(sem.X).to(device)

    def fit_device() -> np.ndarray:
        return CoLiDE("nv", 0.05, device=device, **budget).fit(X_device).adjacency_.cpu().numpy()

    def fit_cpu() -> np.ndarray:
        return CoLiDE("nv", 0.05, **budget).fit(sem.X).adjacency_

    def fit_dagma() -> np.ndarray:
        from dagma.linear import DagmaLinear

        with contextlib.redirect_stderr(io.StringIO()):
            W = DagmaLinear("l2").fit(sem.X.copy(), lambda1=0.02, w_threshold=0.0, T=4,
                                      s=list(COLIDE_S), warm_iter=iters, max_iter=iters,
                                      checkpoint=10**9)
        return to_dag(W, 0.3)

    device_s, W_device = timed(fit_device, device, repeats)
    cpu_s, W_cpu = timed(fit_cpu, torch.device("cpu"), repeats)
    dagma_s, W_dagma = timed(fit_dagma, torch.device("cpu"), repeats)
    shd = [count_accuracy(sem.W, W)["shd"] for W in (W_device, W_cpu, W_dagma)]
    return (f"| CoLiDE-NV d = {d}, 4×{iters} | {device_s:.3g} | {cpu_s:.3g} | {dagma_s:.3g} | "
            f"{cpu_s / device_s:.2f} | {dagma_s / device_s:.2f} | "
            f"{shd[0]:.0f} / {shd[1]:.0f} / {shd[2]:.0f} |")


HYDE_OPTIONS = {"hyres": {}, "forpdn": {}, "hyminor": {}, "wsrrr": {"rank": 10},
                "otvca": {"features": 10, "num_iter": 10, "tv_solver": "bregman"}}


def hyde_peer(method: str, x: torch.Tensor) -> torch.Tensor:
    """hyde-images' ``method`` on ``x``'s device, with the reproduction's parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hyde

        peers = {"hyres": lambda: hyde.HyRes()(x), "forpdn": lambda: hyde.FORPDN_SURE()(x),
                 "hyminor": lambda: hyde.HyMiNoR()(x),
                 "wsrrr": lambda: hyde.WSRRR()(x, rank=10)[0],
                 "otvca": lambda: hyde.OTVCA()(x, features=10, num_itt=10)[0]}
        return peers[method]()


def hyde_row(method: str, size: int, device: torch.device, repeats: int) -> str:
    clean = synthetic_cube(size, size, size, rank=5, seed=0)
    noisy = torch.from_numpy(add_noise(clean, "gaussian", seed=0, sigma=0.1).astype(np.float32))
    x_device = noisy.to(device)
    options = HYDE_OPTIONS[method]

    def ours_on(x: torch.Tensor) -> Callable[[], np.ndarray]:
        return lambda: regzoo_hyde.denoise(x, method, **options).double().cpu().numpy()

    device_s, out_device = timed(ours_on(x_device), device, repeats)
    cpu_s, out_cpu = timed(ours_on(noisy), torch.device("cpu"), repeats)
    peer_s, out_peer = timed(lambda: hyde_peer(method, x_device).double().cpu().numpy(), device,
                             repeats)
    scores = " / ".join(f"{psnr(clean, out):.2f}" for out in (out_device, out_cpu, out_peer))
    return (f"| {method} {size}³ | {device_s:.3g} | {cpu_s:.3g} | {peer_s:.3g} | "
            f"{cpu_s / device_s:.2f} | {peer_s / device_s:.2f} | {scores} |")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the accelerator (cpu for a smoke run)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch here")
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.cpu_threads)
    warnings.filterwarnings("ignore")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    lines = [f"# regzoo on {name} against CPU ({args.cpu_threads} thread(s))", "",
             machine_line(), ""]

    for line in lines:
        print(line)

    def section(title: str, peer: str, quality: str,
                rows: list[tuple[str, Callable[[], str]]]) -> None:
        """One table: a header naming the peer and the quality column, then each guarded row."""
        table = [f"\n## {title}\n", f"| case | device s | regzoo CPU s | {peer} s | CPU / device "
                 f"| {peer} / device | {quality} |", "|---|---:|---:|---:|---:|---:|---|"]
        for line in table:
            print(line, flush=True)
        lines.extend(table)
        for label, row in rows:
            lines.append(guarded(label, row, 7))
            print(lines[-1], flush=True)

    ot_sizes = [(4, 50)] if args.quick else [(16, 100), (64, 100), (16, 500)]
    colide_sizes = [(20, 50)] if args.quick else [(50, 500), (100, 500), (200, 200)]
    hyde_sizes = [32] if args.quick else [128, 256]
    with threadpool_limits(args.cpu_threads):
        section(f"Sparse OT, k = {K}: one batched torch call vs B calls on CPU", "POT",
                "worst S gap to CPU",
                [(f"{b} × {m}×{m}", lambda b=b, m=m: sparse_ot_row(b, m, device, repeats))
                 for b, m in ot_sizes])
        section("CoLiDE-NV: torch loop on the device vs NumPy on CPU and DAGMA", "DAGMA",
                "SHD device / CPU / DAGMA",
                [(f"CoLiDE-NV d = {d}", lambda d=d, i=i: colide_row(d, i, device, repeats))
                 for d, i in colide_sizes])
        section("HyDe, float32 cube, Gaussian σ = 0.1 (hyde-images on the device)", "hyde",
                "PSNR device / CPU / hyde",
                [(f"{method} {n}³", lambda m=method, n=n: hyde_row(m, n, device, repeats))
                 for n in hyde_sizes for method in HYDE_OPTIONS])
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
