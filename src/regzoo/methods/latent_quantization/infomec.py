r"""InfoMEC and DCI: how modular, compact and explicit a representation is about known factors.

InfoMEC (Hsu et al., "Disentanglement via Latent Quantization", NeurIPS 2023, arXiv 2305.18378,
§4; official ``disentangle/metrics/infomec.py``). With sources s ∈ ℕ^{N×n_s} (factor indices)
and latents z ∈ ℝ^{N×n_z}:

- normalised mutual information I_ij = MI(s_i; z_j) / H(s_i): exact (``mutual_info_score``)
  for discrete latents, the KSG estimator (``mutual_info_classif``, 10 neighbours) on
  standardised z_j for continuous ones;
- active latents: range > 0 (discrete) or range > max range / 20 (continuous); inactive
  columns are dropped from I (n_a active);
- InfoM = (mean_j max_i I_ij / Σ_i I_ij − 1/n_s) / (1 − 1/n_s)   (modularity: each latent
  about one source);
- InfoC = (mean_i max_j I_ij / Σ_j I_ij − 1/n_a) / (1 − 1/n_a)   (compactness: each source in
  one latent; undefined — NaN — with a single active latent);
- InfoE = mean_i (H_null,i − H_pred,i) / H_null,i, with H_pred,i the log-loss of an
  unregularised multinomial logistic regression (lbfgs, balanced class weights, 100
  iterations) predicting s_i from z (one-hot codes if discrete, standardised if continuous)
  and H_null,i the same regression on an all-zero input. As in the official code the
  regression is fitted and scored on the same data: InfoE is an in-sample measure.

These are ``infomec.py``'s definitions; the numbers the official code logs during training
come from ``mutual_information.py`` (k = 3 neighbours, range > max/8), which we do not use.
Departures: the official ``multi_class='multinomial'`` argument no longer exists in
scikit-learn (the multinomial model is its default) and ``penalty=None`` is written ``C=inf``;
the KSG estimator's jitter is seeded (``seed``) so a call is deterministic; an active latent
with zero information about every source (0/0 in InfoM) counts as uninformative (its ratio is
1/n_s, giving 0 after normalisation) instead of turning the mean into NaN; ``max_samples``
optionally subsamples (the KSG estimate is the cost, O(N log N) per pair).

DCI (Eastwood & Williams, ICLR 2018, §3; disentanglement_lib's ``dci.py``): per source a
gradient-boosted classifier on a train split; R_ji = feature importance of latent j for source
i; D = Σ_j ρ_j (1 − H_{n_s}(R_j·/Σ_i R_ji)), ρ_j = Σ_i R_ji / Σ R; C = mean_i (1 −
H_{n_z}(R_·i/Σ_j R_ji)); I = mean test accuracy (entropies in bases n_s and n_z).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn import ensemble, feature_selection, linear_model, metrics, preprocessing
from sklearn.exceptions import ConvergenceWarning

ArrayLike = np.ndarray


@dataclass(frozen=True)
class InfoMEC:
    """InfoM, InfoC, InfoE, the NMI matrix (n_s × n_z) and the active-latent mask (n_z)."""

    infom: float
    infoc: float
    infoe: float
    nmi: np.ndarray
    active: np.ndarray


@dataclass(frozen=True)
class DCI:
    """Disentanglement, completeness, informativeness and the importance matrix (n_z × n_s)."""

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray


def _as_arrays(sources: object, latents: object) -> tuple[np.ndarray, np.ndarray]:
    """Validated (N, n_s) integer-valued sources and (N, n_z) finite latents as numpy."""
    arrays = []
    for name, value in (("sources", sources), ("latents", latents)):
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        array = np.asarray(value)
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"{name} must be a non-empty 2-D array (samples × {name}), got "
                             f"shape {array.shape}")
        if not np.issubdtype(array.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got dtype {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} contains NaN or infinite values")
        arrays.append(array)
    s, z = arrays
    if s.shape[0] != z.shape[0]:
        raise ValueError(f"sources has {s.shape[0]} samples but latents has {z.shape[0]}; pass "
                         "one latent row per source row")
    if not np.array_equal(s, np.round(s)):
        raise ValueError("sources must hold integer factor indices (discrete sources); "
                         "discretise continuous factors into bins first")
    return s.astype(np.int64), z.astype(np.float64)


def _encode_columns(array: np.ndarray) -> np.ndarray:
    return np.stack([preprocessing.LabelEncoder().fit_transform(col) for col in array.T], axis=1)


def normalized_mutual_information(sources: ArrayLike, latents: ArrayLike, *, discrete: bool,
                                  n_neighbors: int = 10, seed: int = 0) -> np.ndarray:
    """I_ij = MI(s_i; z_j) / H(s_i), shape (n_s, n_z) (module docstring)."""
    s, z = _as_arrays(sources, latents)
    s = _encode_columns(s)
    z = _encode_columns(z) if discrete else preprocessing.StandardScaler().fit_transform(z)
    nmi = np.empty((s.shape[1], z.shape[1]))
    for i in range(s.shape[1]):
        entropy = metrics.mutual_info_score(s[:, i], s[:, i])
        for j in range(z.shape[1]):
            if discrete:
                mi = metrics.mutual_info_score(s[:, i], z[:, j])
            else:
                mi = feature_selection.mutual_info_classif(
                    z[:, j:j + 1], s[:, i], discrete_features=False, n_neighbors=n_neighbors,
                    random_state=seed)[0]
            nmi[i, j] = mi / entropy if entropy > 0 else 0.0
    return nmi


def _normalised_ratio(nmi: np.ndarray, axis: int, count: int) -> float:
    """(mean of max/sum along ``axis``, 0/0 → 1/count) rescaled so that 1/count maps to 0."""
    total = nmi.sum(axis=axis)
    ratio = np.where(total > 0, nmi.max(axis=axis) / np.where(total > 0, total, 1.0), 1 / count)
    return float((ratio.mean() - 1 / count) / (1 - 1 / count))


def _log_loss_of_regression(features: object, target: np.ndarray) -> float:
    """In-sample log-loss of an unregularised, class-balanced multinomial logistic regression."""
    model = linear_model.LogisticRegression(C=np.inf, tol=1e-4, class_weight="balanced",
                                            solver="lbfgs", max_iter=100)
    with warnings.catch_warnings():
        # 100 lbfgs iterations is the official budget; separable codes stop it early.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features, target)
    return float(metrics.log_loss(target, model.predict_proba(features),
                                  labels=model.classes_))


def infoe(sources: ArrayLike, latents: ArrayLike, *, discrete: bool) -> float:
    """InfoE: the mean normalised predictive information of the latents about each source."""
    s, z = _as_arrays(sources, latents)
    s = _encode_columns(s)
    features = (preprocessing.OneHotEncoder().fit_transform(z) if discrete
                else preprocessing.StandardScaler().fit_transform(z))
    null = np.zeros_like(z)
    values = []
    for i in range(s.shape[1]):
        if np.unique(s[:, i]).size < 2:
            raise ValueError(f"source {i} takes a single value; InfoE needs ≥ 2 classes per "
                             "source (drop constant factors)")
        h_null = _log_loss_of_regression(null, s[:, i])
        h_pred = _log_loss_of_regression(features, s[:, i])
        values.append((h_null - h_pred) / h_null)
    return float(np.mean(values))


def infomec(sources: ArrayLike, latents: ArrayLike, *, discrete: bool, n_neighbors: int = 10,
            max_samples: int | None = None, seed: int = 0) -> InfoMEC:
    """InfoM, InfoC and InfoE of ``latents`` (N, n_z) about ``sources`` (N, n_s).

    ``discrete``: the latents are codes (a quantised model's) rather than real vectors.
    ``max_samples`` subsamples N rows (seeded) first; ``n_neighbors`` is the KSG k.
    """
    s, z = _as_arrays(sources, latents)
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be ≥ 1, got {n_neighbors}")
    if max_samples is not None:
        if max_samples < 2:
            raise ValueError(f"max_samples must be ≥ 2 or None, got {max_samples}")
        if s.shape[0] > max_samples:
            keep = np.random.default_rng(seed).choice(s.shape[0], max_samples, replace=False)
            s, z = s[keep], z[keep]
    nmi = normalized_mutual_information(s, z, discrete=discrete, n_neighbors=n_neighbors,
                                        seed=seed)
    ranges = z.max(axis=0) - z.min(axis=0)
    active = ranges > 0 if discrete else ranges > ranges.max() / 20
    n_sources, n_active = s.shape[1], int(active.sum())
    pruned = nmi[:, active]
    if n_active == 0:
        modularity = compactness = float("nan")
    else:
        modularity = (_normalised_ratio(pruned, 0, n_sources) if n_sources > 1
                      else float("nan"))
        compactness = (_normalised_ratio(pruned, 1, n_active) if n_active > 1
                       else float("nan"))
    return InfoMEC(infom=modularity, infoc=compactness, infoe=infoe(s, z, discrete=discrete),
                   nmi=nmi, active=active)


def _entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    p = p / np.clip(p.sum(axis=axis, keepdims=True), 1e-12, None)
    logs = np.log(np.where(p > 0, p, 1.0)) / np.log(base)
    return -(p * logs).sum(axis=axis)


def dci(sources: ArrayLike, latents: ArrayLike, *, train_fraction: float = 0.8,
        seed: int = 0) -> DCI:
    """DCI with gradient-boosted classifiers (module docstring); a seeded train/test split."""
    s, z = _as_arrays(sources, latents)
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    order = np.random.default_rng(seed).permutation(s.shape[0])
    cut = round(train_fraction * s.shape[0])
    if cut < 2 or cut >= s.shape[0]:
        raise ValueError(f"{s.shape[0]} samples leave an empty train or test split at "
                         f"train_fraction={train_fraction}")
    train, test = order[:cut], order[cut:]
    n_latents, n_sources = z.shape[1], s.shape[1]
    importance = np.zeros((n_latents, n_sources))
    accuracy = []
    for i in range(n_sources):
        model = ensemble.GradientBoostingClassifier(random_state=seed)
        model.fit(z[train], s[train, i])
        importance[:, i] = np.abs(model.feature_importances_)
        accuracy.append(float(np.mean(model.predict(z[test]) == s[test, i])))
    total = importance.sum()
    if n_sources > 1 and total > 0:
        rho = importance.sum(axis=1) / total
        disentanglement = float((rho * (1 - _entropy(importance, n_sources, 1))).sum())
    else:
        disentanglement = float("nan")
    completeness = (float(np.mean(1 - _entropy(importance, n_latents, 0)))
                    if n_latents > 1 else float("nan"))
    return DCI(disentanglement=disentanglement, completeness=completeness,
               informativeness=float(np.mean(accuracy)), importance=importance)
