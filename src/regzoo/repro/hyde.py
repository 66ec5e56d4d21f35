"""HyDe at CPU scale: every classical denoiser on synthetic cubes, against ``hyde-images``.

HyDe (IGARSS 2022) is a toolbox; its claims are parity with the original implementations at a
fraction of the cost, and DNNs that transfer to cubes of other band counts. Here:

* **Data** (:mod:`regzoo.data.hyperspectral`): one exact rank-5 cube ``size``×``size``×``bands``
  (64³ in full, seed ``cube_seed``), noise drawn per seed (3 draws): setting ``gaussian``
  (i.i.d., σ = 0.1, noisy PSNR 20 dB) and ``mixed`` (band-dependent σ ∈ [0.02, 0.15], 5 %
  salt-and-pepper, stripes on 10 bands).
* **Arms**: ``pca_oracle`` (truncated SVD at the true rank, the spec's 3-line baseline); ours
  with default parameters — ``hyres``, ``forpdn``, ``hyminor``, ``wsrrr`` (rank 10), ``otvca``
  (10 features, 10 iterations), ``fasthyde`` (k = 10), ``l1hymixde`` (k = 10, p = 0.05,
  ``l1_max_iter`` = 10 iterations, HyDe's default, instead of the MATLAB 40, for the time
  budget), FastHyDe and L1HyMixDe with ``normalize=True`` (per-band [0, 1] scaling,
  hyde-images' default; ours defaults to the MATLAB codes' False) so that parity compares like
  with like; and ``hyde_<method>``, the same method from ``hyde-images`` 0.4.3 with its
  defaults and the same rank/feature/k choices (only when it imports). L1HyMixDe (ours and
  peer) runs only in ``l1_settings`` = ``mixed``, the noise it is built for: with BM3D on 10
  eigen-images per ADMM iteration it costs ~100 BM3D calls per cube, minutes of CPU on this
  shared machine, which Gaussian units would double. Where the two implementations differ by
  design (the module docstrings of :mod:`regzoo.methods.hyde` list why), the parity gap is
  reported, not hidden.
* **DNN transfer** (part B, :mod:`regzoo.repro.hyde_dnn`): settings ``<noise>_transfer`` score
  the arm ``dnn`` (QRNN3D trained on 31-band cubes, sliding windows on the test cube of another
  band count) and those of ``pca_oracle``, ``hyres``, ``hyminor``, ``fasthyde`` that are in
  ``arms``, on the *same* test cube
  (:func:`~regzoo.repro.hyde_dnn.transfer_test_cube`, size ``dnn_size``). The full preset uses
  ``dnn_size="quick"`` (32×32×48 test cube, 30 training steps): the ``"full"`` transfer
  training is about 5 minutes per unit on an idle core, six units would exceed the 15-minute
  budget (``--set dnn_size=full`` runs it).

Metrics per unit: mean band PSNR (peak 1), SSIM, SAM (degrees), wall and process-CPU seconds of
the denoiser call, and the per-band PSNR curve (plotted against the band index). Derived arms
``parity_<method>`` hold ``|PSNR_ours − PSNR_hyde|`` per seed; ``tolerance`` holds 0.3 dB.

Claims (margins from the catalog and the issue, fixed before any run): headline, FastHyDe beats
oracle-rank PCA by ≥ 5 dB PSNR (``gaussian``); secondary, per method and noise setting,
``|ΔPSNR| ≤ 0.3 dB`` against ``hyde-images`` (effect = 0.3 − |Δ| > 0 with the 2·SE rule);
FastHyDe above every other arm is not claimed (the spec expects FastHyDe > WSRRR > HyRes ≈
PCA for Gaussian noise, L1HyMixDe/HyMiNoR best on mixed noise; the note reads the table).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from regzoo.core.checks import check_choice
from regzoo.data.hyperspectral import NOISE_KINDS, add_noise, psnr, sam, ssim, synthetic_cube
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import Claim, Reproduction, Unit, UnitEnv, UnitResult, summary_text

OURS = ("hyres", "forpdn", "hyminor", "wsrrr", "otvca", "fasthyde", "l1hymixde")
BM3D_ARMS = ("fasthyde", "l1hymixde")
TRANSFER_ARMS = ("dnn", "pca_oracle", "hyres", "hyminor", "fasthyde")
PARITY_TOLERANCE = 0.3
TRANSFER = "_transfer"
logger = logging.getLogger(__name__)


def peer_available() -> bool:
    """True when ``hyde-images`` imports (needs pytorch_wavelets, scikit-image, setuptools<81)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import hyde  # noqa: F401
    except Exception:  # any import-time failure of the peer means "not available"
        return False
    return True


def bm3d_available() -> bool:
    """True when the optional ``bm3d`` package imports."""
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return False
    return True


def dnn_available() -> bool:
    """True when part B's DNN transfer module is present."""
    try:
        import regzoo.repro.hyde_dnn  # noqa: F401
    except ImportError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class HyDeReproConfig(ReproConfig):
    """Sizes of the HyDe reproduction; presets ``tiny``, ``quick``, ``full``."""

    size: int = 64
    bands: int = 64
    rank: int = 5
    cube_seed: int = 0
    noises: tuple[str, ...] = ("gaussian", "mixed")
    arms: tuple[str, ...] = ("pca_oracle", *OURS)
    peers: bool = True
    l1_settings: tuple[str, ...] = ("mixed",)
    wsrrr_rank: int = 10
    otvca_features: int = 10
    otvca_iter: int = 10
    k_subspace: int = 10
    l1_max_iter: int = 10
    normalize: bool = True
    transfer: bool = True
    dnn_size: str = "quick"

    def __post_init__(self) -> None:
        super().__post_init__()
        for noise in self.noises:
            check_choice("noises", noise, NOISE_KINDS)
        for arm in self.arms:
            check_choice("arms", arm, ("pca_oracle", *OURS))
        check_choice("dnn_size", self.dnn_size, ("tiny", "quick", "full"))
        if self.rank > self.bands or self.wsrrr_rank > self.bands:
            raise ValueError(f"rank and wsrrr_rank must be <= bands ({self.bands})")

    @classmethod
    def tiny(cls) -> HyDeReproConfig:
        return cls(seeds=(0,), size=32, bands=12, rank=3, arms=("pca_oracle", "hyres", "otvca"),
                   wsrrr_rank=4, otvca_features=4, otvca_iter=2, k_subspace=4, l1_max_iter=2,
                   noises=("gaussian",), l1_settings=(), dnn_size="tiny")

    @classmethod
    def quick(cls) -> HyDeReproConfig:
        return cls(arms=("pca_oracle", "hyres", "otvca", "fasthyde"), noises=("gaussian",),
                   transfer=False)

    @classmethod
    def full(cls) -> HyDeReproConfig:
        return cls(seeds=(0, 1, 2, 3, 4))  # five noise draws: the fewest that give a verdict


def pca_oracle(noisy: np.ndarray, rank: int) -> np.ndarray:
    """Truncated SVD of the pixels × bands matrix at the true rank (no centring)."""
    rows, cols, bands = noisy.shape
    u, s, vt = np.linalg.svd(noisy.reshape(-1, bands), full_matrices=False)
    return ((u[:, :rank] * s[:rank]) @ vt[:rank]).reshape(rows, cols, bands)


def run_ours(arm: str, noisy: np.ndarray, config: HyDeReproConfig) -> np.ndarray:
    """Our denoiser ``arm`` with the reproduction's parameters."""
    from regzoo.methods import hyde

    options: dict[str, dict[str, Any]] = {
        "wsrrr": {"rank": config.wsrrr_rank},
        "otvca": {"features": config.otvca_features, "num_iter": config.otvca_iter},
        "fasthyde": {"k_subspace": config.k_subspace, "normalize": config.normalize},
        "l1hymixde": {"k_subspace": config.k_subspace, "max_iter": config.l1_max_iter,
                      "normalize": config.normalize},
    }
    return hyde.denoise(noisy, arm, **options.get(arm, {}))


def run_peer(method: str, noisy: np.ndarray, config: HyDeReproConfig) -> np.ndarray:
    """``hyde-images``' implementation of ``method`` with its defaults (float32, as it expects)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hyde

        x = torch.from_numpy(noisy.astype(np.float32))
        if method == "hyres":
            out = hyde.HyRes()(x)
        elif method == "forpdn":
            out = hyde.FORPDN_SURE()(x)
        elif method == "hyminor":
            out = hyde.HyMiNoR()(x)
        elif method == "wsrrr":
            out = hyde.WSRRR()(x, rank=config.wsrrr_rank)[0]
        elif method == "otvca":
            out = hyde.OTVCA()(x, features=config.otvca_features, num_itt=config.otvca_iter)[0]
        elif method == "fasthyde":
            out = hyde.FastHyDe()(x, noise_type="additive", iid=True,
                                  k_subspace=config.k_subspace)
        elif method == "l1hymixde":
            out = hyde.L1HyMixDe()(x, k_subspace=config.k_subspace, p=0.05,
                                   max_iter=config.l1_max_iter)
        else:
            raise ValueError(f"no hyde-images counterpart for {method!r}")
    return out.detach().cpu().numpy().astype(np.float64)


def _settings(config: HyDeReproConfig) -> list[str]:
    out = list(config.noises)
    if config.transfer and dnn_available():
        out += [noise + TRANSFER for noise in config.noises]
    return out


def _arms(config: HyDeReproConfig, setting: str) -> list[str]:
    bm3d = bm3d_available()
    if setting.endswith(TRANSFER):
        return [a for a in TRANSFER_ARMS if (a == "dnn" or a in config.arms)
                and (bm3d or a not in BM3D_ARMS)]
    arms = [a for a in config.arms if (bm3d or a not in BM3D_ARMS)
            and (a != "l1hymixde" or setting in config.l1_settings)]
    if config.peers and peer_available():
        arms += [f"hyde_{a}" for a in arms if a in OURS]
    return arms


def _scores(clean: np.ndarray, out: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(clean, out), "ssim": ssim(clean, out), "sam": sam(clean, out)}


class HyDeReproduction(Reproduction):
    """The classical HyDe denoisers vs oracle PCA and vs hyde-images; the DNN transfer arm."""

    slug = "hyde"
    config_type = HyDeReproConfig
    title = "HyDe: hyperspectral denoising toolbox"
    plot_curves = (("psnr_band", "PSNR per band (dB)"),)
    extra_row_label = "PSNR (dB) vs CPU seconds"
    arm_labels = {"pca_oracle": "PCA (oracle rank)", "dnn": "QRNN3D transfer (part B)",
                  **{a: a for a in OURS}, **{f"hyde_{a}": f"hyde-images {a}" for a in OURS}}
    table_metrics = ("psnr", "ssim", "sam", "seconds", "cpu_seconds", "noisy_psnr",
                     "abs_dpsnr")
    unit_axes = ("seeds", "arms", "noises", "l1_settings")

    def units(self, config: HyDeReproConfig) -> list[Unit]:
        units = [Unit(setting, arm, seed) for setting in _settings(config)
                 for arm in _arms(config, setting) for seed in config.seeds]
        slow = ("dnn", "l1hymixde", "hyde_l1hymixde", "fasthyde", "hyde_fasthyde")
        return sorted(units, key=lambda u: u.arm not in slow)  # long units first

    def curve_x(self, config: HyDeReproConfig, setting: str
                ) -> tuple[str, Sequence[float] | None, str]:
        return "band", None, "linear"

    def run_unit(self, config: HyDeReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        if unit.setting.endswith(TRANSFER):
            return self._run_transfer(config, unit, env)
        clean = synthetic_cube(config.size, config.size, config.bands, rank=config.rank,
                               seed=config.cube_seed)
        noisy = add_noise(clean, unit.setting, seed=unit.seed)
        return self._score_arm(config, unit.arm, clean, noisy, env.device)

    def _score_arm(self, config: HyDeReproConfig, arm: str, clean: np.ndarray,
                   noisy: np.ndarray, device: torch.device) -> UnitResult:
        """Denoise with ``arm`` and score it.

        regzoo's denoisers run on ``device`` (a torch tensor there; the numpy path on the CPU);
        the oracle PCA and hyde-images are numpy code on the CPU.
        """
        with threadpool_limits(1):
            wall, cpu = time.perf_counter(), time.process_time()
            if arm == "pca_oracle":
                out = pca_oracle(noisy, config.rank)
            elif arm.startswith("hyde_"):
                try:
                    out = run_peer(arm.removeprefix("hyde_"), noisy, config)
                except Exception as error:  # a peer's failure is a result, not a crash
                    logger.warning("hyde-images %s failed: %s", arm, error)
                    nan = {k: math.nan for k in ("psnr", "ssim", "sam", "seconds",
                                                 "cpu_seconds")}
                    return UnitResult({**nan, "noisy_psnr": psnr(clean, noisy),
                                       "peer_failed": 1.0}, {})
            elif device.type == "cpu":
                out = run_ours(arm, noisy, config)
            else:
                out = run_ours(arm, torch.as_tensor(noisy, device=device), config).cpu().numpy()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        mse = np.mean((clean - out) ** 2, axis=(0, 1))
        curve = (10 * np.log10(1.0 / np.maximum(mse, 1e-30))).tolist()
        metrics = {**_scores(clean, out), "seconds": wall, "cpu_seconds": cpu,
                   "noisy_psnr": psnr(clean, noisy)}
        return UnitResult(metrics, {"psnr_band": curve})

    def _run_transfer(self, config: HyDeReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        from regzoo.repro.hyde_dnn import run_dnn_transfer, transfer_test_cube

        noise = unit.setting.removesuffix(TRANSFER)
        clean, noisy = transfer_test_cube(unit.seed, noise, config.dnn_size)
        if unit.arm != "dnn":
            return self._score_arm(config, unit.arm, clean, noisy, env.device)
        scores = run_dnn_transfer(unit.seed, noise, config.dnn_size, env)
        metrics = {key: float(value) for key, value in scores.items()}
        metrics["noisy_psnr"] = psnr(clean, noisy)
        return UnitResult(metrics, {})

    def derived_arms(self, config: HyDeReproConfig,
                     records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for setting in config.noises:
            for seed in config.seeds:
                by_arm = {r["arm"]: r["metrics"] for r in records
                          if r["setting"] == setting and r["seed"] == seed}
                pairs = [a for a in OURS if a in by_arm and f"hyde_{a}" in by_arm]
                for arm in pairs:
                    gap = abs(by_arm[arm]["psnr"] - by_arm[f"hyde_{arm}"]["psnr"])
                    out.append({"setting": setting, "arm": f"parity_{arm}", "seed": seed,
                                "metrics": {"abs_dpsnr": gap}, "curves": {}})
                if pairs:
                    out.append({"setting": setting, "arm": "tolerance", "seed": seed,
                                "metrics": {"abs_dpsnr": PARITY_TOLERANCE}, "curves": {}})
        return out

    def claim(self, config: HyDeReproConfig) -> Claim:
        if "fasthyde" not in config.arms or not bm3d_available():
            return Claim(
                statement="Without FastHyDe in this run (not in arms, or bm3d missing): HyRes "
                "beats oracle-rank PCA by at least 5 dB of mean band PSNR (a stand-in check "
                "only; the headline needs FastHyDe).",
                metric="psnr", setting=config.noises[0], method="hyres",
                baseline="pca_oracle", margin=5.0)
        return Claim(
            statement="On a synthetic low-rank 64³ cube with i.i.d. Gaussian noise (σ = 0.1), "
            "FastHyDe (HySime subspace + BM3D eigen-images) beats oracle-rank PCA by at least "
            "5 dB of mean band PSNR (spec §3 anchor: +10.5 dB with hyde-images).",
            metric="psnr", setting="gaussian", method="fasthyde", baseline="pca_oracle",
            margin=5.0)

    def secondary_claims(self, config: HyDeReproConfig) -> list[Claim]:
        if not (config.peers and peer_available()):
            return []
        claims = []
        for setting in config.noises:
            for arm in config.arms:
                if arm not in OURS or (arm in BM3D_ARMS and not bm3d_available()):
                    continue
                if arm == "l1hymixde" and setting not in config.l1_settings:
                    continue
                claims.append(Claim(
                    statement=f"{arm} matches hyde-images 0.4.3 within {PARITY_TOLERANCE} dB "
                    f"of PSNR ({setting}; HyDe's claim: same quality as the original codes).",
                    metric="abs_dpsnr", setting=setting, method=f"parity_{arm}",
                    baseline="tolerance", margin=0.0, higher_is_better=False))
        return claims

    def draw_extra_row(self, ax: Any, setting: str, result: dict[str, Any]) -> bool:
        arms = result["metrics"]["aggregate"].get(setting, {})
        drawn = False
        # One colour per method, shared by ours (circles) and hyde-images' (squares).
        palette = {a: f"C{i}" for i, a in enumerate(OURS)} | {"pca_oracle": "C7", "dnn": "C9"}
        for arm, values in sorted(arms.items()):
            # The DNN arm times its sliding-window inference in wall seconds only.
            timing = values.get("cpu_seconds") or values.get("seconds")
            if "psnr" not in values or timing is None:
                continue
            peer = arm.startswith("hyde_")
            x = timing["mean"]
            y = values["psnr"]["mean"]
            if x is None or y is None:
                continue
            ax.scatter([max(x, 1e-3)], [y], marker="s" if peer else "o", s=20,
                       color=palette.get(arm.removeprefix("hyde_"), "k"),
                       label=self.arm_labels.get(arm, arm))
            drawn = True
        if drawn:
            ax.set_xscale("log")
            ax.set_xlabel("CPU s per cube (DNN: wall s), log")
            ax.legend(fontsize=5, ncol=2)
        return drawn

    def note(self, config: HyDeReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        def cell(setting: str, arm: str, metric: str, fmt: str = ".2f") -> str:
            return summary_text(aggregate, setting, arm, metric, fmt)

        parts = []
        for setting in _settings(config):
            arms = aggregate.get(setting, {})
            ranked = sorted((a for a in arms if "psnr" in arms[a]
                             and arms[a]["psnr"]["mean"] is not None),
                            key=lambda a: -arms[a]["psnr"]["mean"])
            row = "; ".join(f"{a} {cell(setting, a, 'psnr')} dB "
                            f"({cell(setting, a, 'cpu_seconds', '.2g')} s CPU)" for a in ranked)
            noisy = cell(setting, ranked[0] if ranked else "", "noisy_psnr")
            parts.append(f"{setting} (noisy {noisy} dB), PSNR ranking: {row}.")
            failed = [a for a in arms if (arms[a].get("peer_failed") or {}).get("mean")]
            if failed:
                parts.append(f"hyde-images raised an error in {setting} for: "
                             + ", ".join(failed) + ".")
            gaps = []
            for a in OURS:
                ours, peer = arms.get(a, {}).get("psnr"), arms.get(f"hyde_{a}", {}).get("psnr")
                if ours and peer and ours["mean"] is not None and peer["mean"] is not None:
                    gaps.append(f"{a} {ours['mean'] - peer['mean']:+.2f}")
            if gaps:
                parts.append(f"ΔPSNR ours − hyde-images ({setting}): " + ", ".join(gaps)
                             + " dB.")
        if any(s.endswith(TRANSFER) for s in _settings(config)):
            parts.append(
                f"DNN transfer (transfer preset {config.dnn_size!r} of regzoo.repro.hyde_dnn): "
                "scored on the same other-band-count test cube as the classical arms beside it; "
                "its wall seconds are the sliding-window inference only (training excluded). "
                "The 'full' transfer size (250 steps, 64×64×100 test cube, ~3.5 CPU-minutes per "
                "unit) is measured in regzoo.repro.hyde_dnn's docstring; there too the DNN stays "
                "below FastHyDe, HyMiNoR and HyRes.")
        gaussian = aggregate.get("gaussian", {})
        if "pca_oracle" in gaussian:
            def mean_psnr(arm: str) -> float:
                value = gaussian.get(arm, {}).get("psnr") or {}
                return value.get("mean") if value.get("mean") is not None else math.nan

            base = mean_psnr("pca_oracle")
            above = [a for a in OURS if a in gaussian and mean_psnr(a) > base]
            below = [a for a in OURS if a in gaussian and mean_psnr(a) <= base]
            measured = ", ".join(f"{a} {mean_psnr(a):.2f}" for a in ("hyres", "wsrrr", "fasthyde")
                                 if a in gaussian)
            parts.append(
                "The spec expected FastHyDe > WSRRR > HyRes ≈ PCA for Gaussian noise; measured "
                f"(gaussian): {measured}, oracle PCA {base:.2f} dB. Above oracle PCA: "
                f"{', '.join(above) or 'none'}; not above: {', '.join(below) or 'none'}.")
        missing = []
        if not peer_available():
            missing.append("hyde-images did not import, so no parity arms ran")
        if not bm3d_available():
            missing.append("bm3d is not installed, so FastHyDe and L1HyMixDe did not run")
        if config.transfer and not dnn_available():
            missing.append("the DNN transfer module (part B) is absent, so no dnn arm ran")
        reading = (
            "Reading: |ΔPSNR| ≤ 0.3 dB holds where both implementations run the same "
            "algorithm — FastHyDe (same pipeline, same BM3D), and HyMiNoR's ADMM, which matches "
            "hyde-images to 1e-9 given the same first step (tests/methods/test_hyde_parity.py). "
            "Elsewhere the gap measures where hyde-images 0.4.3 departs from the papers: its "
            "HyRes inverts the unthresholded wavelet coefficients (whitened PCA truncation), and "
            "HyMiNoR inherits that first step; its WSRRR keeps rank + 1 components with a "
            "redundant transform; its FORPDN stops each λ search at the first SURE increase "
            "with a misplaced parenthesis in the detail-level SURE; its OTVCA stops split "
            "Bregman at tolerance 0.1, which acts as extra quadratic smoothing and scores higher "
            "here than solving the paper's TV problem; its L1HyMixDe returns the last plain "
            "median and starts V at the median image. Positive ΔPSNR (ours − hyde) favours "
            "regzoo. Times are process CPU seconds of one denoiser call in a one-thread process "
            "on a shared, heavily loaded 2-core machine (wall times 5–20× larger).")
        return " ".join([reading, *parts, *(m + "." for m in missing)])


REPRODUCTION = HyDeReproduction()
