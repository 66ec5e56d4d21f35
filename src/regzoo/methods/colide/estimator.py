"""The CoLiDE estimator and its path.

The decreasing-μ path over :class:`~regzoo.methods.colide.solver.Solver` stages (paper §4.1),
the official post-processing :func:`to_dag`, and the scikit-learn interface.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import validate_data

from regzoo.core.arrays import as_tensor, restore
from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.data.sem import is_dag
from regzoo.methods.colide.scores import VARIANCES, optimal_scale
from regzoo.methods.colide.solver import Solver
from regzoo.registry import Default, register

DEFAULTS = (
    Default("lambda1", 0.05, "official main.py (both variants)"),
    Default("T", 4, "official main.py"),
    Default("s", (1.0, 0.9, 0.8, 0.7), "official main.py"),
    Default("warm_iter", 20000, "official main.py"),
    Default("max_iter", 70000, "official main.py"),
    Default("lr", 3e-4, "official main.py / model.py"),
    Default("mu_init", 1.0, "official model.py fit()"),
    Default("mu_factor", 0.1, "official model.py fit()"),
    Default("checkpoint", 1000, "official model.py fit()"),
    Default("tol", 1e-6, "official model.py minimize()"),
    Default("beta_1", 0.99, "official model.py fit()"),
    Default("beta_2", 0.999, "official model.py fit()"),
    Default("threshold", 0.3, "official utils.py to_dag(thr=0.3)"),
    Default("sigma_min", 0.0, "official model.py (no floor); paper §4 names σ₀ without a value"),
)


def to_dag(W: Any, threshold: float = 0.3) -> Any:
    """CoLiDE/DAGMA post-processing: threshold, then drop the weakest edges until acyclic.

    Zeroes |W_ij| ≤ threshold, then deletes the remaining edges in increasing |W_ij| until the
    graph is acyclic (official ``utils.to_dag``).

    Acyclicity only improves as edges are removed, so the number of removed edges is found by
    bisection (O(log E) acyclicity checks) instead of one check per edge; the result is the
    same as removing one edge at a time. Returns the caller's array type.
    """
    check_range("threshold", threshold, 0.0)
    A, kind = as_tensor("W", W, ndim=2)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"W must be a square (d, d) matrix, got shape {tuple(A.shape)}")
    A = A.cpu().numpy()
    A[np.abs(A) <= threshold] = 0.0
    if not is_dag(A):
        rows, cols = np.nonzero(A)
        order = np.argsort(np.abs(A[rows, cols]), kind="stable")
        low, high = 0, order.size  # removing `high` smallest edges gives a DAG (empty graph)

        def acyclic_after(k: int) -> bool:
            B = A.copy()
            B[rows[order[:k]], cols[order[:k]]] = 0.0
            return is_dag(B)

        while low < high:
            mid = (low + high) // 2
            if acyclic_after(mid):
                high = mid
            else:
                low = mid + 1
        A[rows[order[:low]], cols[order[:low]]] = 0.0
    return restore(torch.from_numpy(A).to(kind.dtype), kind)


def _schedule(s: float | Sequence[float], T: int) -> list[float]:
    if isinstance(s, int | float) and not isinstance(s, bool):
        values = [float(s)] * T
    elif isinstance(s, Sequence) and len(s) > 0:
        values = [float(v) for v in s]
        values += [values[-1]] * (T - len(values))  # official: pad with the last value
    else:
        raise TypeError(f"s must be a positive number or a non-empty sequence of them, got {s!r}")
    for value in values:
        check_range("s", value, 0.0, low_inclusive=False)
    return values[:T]


@register(
    "colide",
    kind="estimator",
    summary="Concomitant linear DAG estimation: scaled-lasso score with closed-form noise "
    "scale(s) (EV: one, NV: one per node), DAGMA log-det acyclicity on a decreasing-μ path.",
    equation="min_W,σ μ[Σ_i r_i(W)/(2σ_i) + Σ_i σ_i/2 + λ‖W‖₁] + h(W; s), "
    "r_i = [(I−W)ᵀΣ̂(I−W)]_ii, σ̂_i = sqrt(r_i) (NV) or σ̂ = sqrt(Σ_i r_i/d) (EV)",
    defaults=DEFAULTS,
    variants=("ev", "nv"),
)
class CoLiDE(BaseEstimator):
    """CoLiDE estimator (scikit-learn style): ``CoLiDE(variance="nv").fit(X).adjacency_``.

    A scikit-learn ``BaseEstimator``: ``get_params``, ``set_params`` and ``sklearn.clone`` work.
    The solver is deterministic (W₀ = 0, no sampling), so it takes no ``random_state``.

    Args:
        variance: ``"ev"`` (CoLiDE-EV, one noise scale) or ``"nv"`` (CoLiDE-NV, one per node).
        lambda1: ℓ1 weight λ ≥ 0.
        T: number of path stages.
        mu_init: μ₀, the score's weight in the first stage.
        mu_factor: μ_{t+1} = μ_t · mu_factor, in (0, 1].
        s: log-det parameter per stage (a number, or a sequence padded with its last value).
        warm_iter: Adam iterations in stages 0..T−2.
        max_iter: Adam iterations in the last stage.
        lr: Adam learning rate.
        checkpoint: iterations between objective-based convergence checks.
        tol: relative change of the objective that ends a stage.
        beta_1: Adam's first-moment decay.
        beta_2: Adam's second-moment decay.
        threshold: |W_ij| ≤ threshold is zeroed in ``adjacency_``.
        sigma_min: the floor σ₀ of the scales (0: the official code).
        device: where to compute (default: the input's device; CPU for numpy).

    Attributes (after :meth:`fit`):
        W_: ``(d, d)`` raw weighted adjacency (before thresholding), the input's array type.
        sigma_: the estimated noise scale: a float (EV) or a ``(d,)`` array (NV).
        adjacency_: :func:`to_dag` of ``W_`` at ``threshold``: a weighted DAG.
        n_iter_: Adam iterations run, over every stage and restart.
        history_: one record per stage: s, μ, lr, iterations, restarts, objective, score, h.
        n_features_in_: d.
        feature_names_in_: the column names when ``X`` was a pandas DataFrame with string
            column names (scikit-learn's convention); absent otherwise.

    For graph users: :meth:`to_networkx` gives the DAG as a weighted ``networkx.DiGraph`` and
    :meth:`to_dataframe` the adjacency as a labelled ``pandas.DataFrame``, both named by the
    DataFrame's columns (``pip install 'regzoo[graph]'``). ``W_[i, j] ≠ 0`` is an edge
    i → j (X = X W + noise).
    """

    def __init__(
        self,
        variance: str = "ev",
        lambda1: float = 0.05,
        *,
        T: int = 4,
        mu_init: float = 1.0,
        mu_factor: float = 0.1,
        s: float | Sequence[float] = (1.0, 0.9, 0.8, 0.7),
        warm_iter: int = 20000,
        max_iter: int = 70000,
        lr: float = 3e-4,
        checkpoint: int = 1000,
        tol: float = 1e-6,
        beta_1: float = 0.99,
        beta_2: float = 0.999,
        threshold: float = 0.3,
        sigma_min: float = 0.0,
        device: torch.device | str | None = None,
    ) -> None:
        self.variance = variance
        self.lambda1 = lambda1
        self.T = T
        self.mu_init = mu_init
        self.mu_factor = mu_factor
        self.s = s
        self.warm_iter = warm_iter
        self.max_iter = max_iter
        self.lr = lr
        self.checkpoint = checkpoint
        self.tol = tol
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.threshold = threshold
        self.sigma_min = sigma_min
        self.device = device

    def _validate(self) -> list[float]:
        check_choice("variance", self.variance, VARIANCES)
        check_range("lambda1", self.lambda1, 0.0)
        check_positive_int("T", self.T)
        check_range("mu_init", self.mu_init, 0.0, low_inclusive=False)
        check_range("mu_factor", self.mu_factor, 0.0, 1.0, low_inclusive=False)
        check_positive_int("warm_iter", self.warm_iter)
        check_positive_int("max_iter", self.max_iter)
        check_range("lr", self.lr, 0.0, low_inclusive=False)
        check_positive_int("checkpoint", self.checkpoint)
        check_range("tol", self.tol, 0.0)
        check_range("beta_1", self.beta_1, 0.0, 1.0, high_inclusive=False)
        check_range("beta_2", self.beta_2, 0.0, 1.0, high_inclusive=False)
        check_range("threshold", self.threshold, 0.0)
        check_range("sigma_min", self.sigma_min, 0.0)
        return _schedule(self.s, self.T)

    def fit(self, X: Any, y: Any = None, *, w_init: Any = None) -> CoLiDE:
        """Estimate W and the noise scale(s) from samples ``X`` of shape ``(n, d)``.

        Args:
            X: data, a torch tensor or anything scikit-learn takes as an array (numpy, lists,
                memory maps; not sparse); copied, never modified.
            y: ignored (scikit-learn's signature of an unsupervised estimator).
            w_init: optional ``(d, d)`` warm start (official NV option); the scales start at
                its residual scales. Default: W = 0 and σ from the column norms of X.
        """
        schedule = self._validate()
        if isinstance(X, torch.Tensor) and hasattr(self, "feature_names_in_"):
            del self.feature_names_in_  # a refit on a tensor must not keep old names
        if not isinstance(X, torch.Tensor):
            # scikit-learn's own checks (and messages) for array input: dtype, NaN/inf,
            # complex, sparse, at least 2 samples and 2 variables; sets n_features_in_ and,
            # for a DataFrame with string columns, feature_names_in_.
            X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2,
                              ensure_min_features=2)
        data, kind = as_tensor("X", X, ndim=2, dtype=torch.float64, device=self.device,
                               finite=True)
        n, d = data.shape
        if n < 2:
            raise ValueError(f"X needs at least 2 samples (rows), got n_samples={n}")
        if d < 2:
            raise ValueError(f"X needs at least 2 variables (columns), got n_features={d}")
        data = data - data.mean(dim=0, keepdim=True)
        norms = data.norm(dim=0) / math.sqrt(n)
        constant = torch.nonzero(norms <= 1e-12 * max(float(norms.max()), 1e-300)).flatten()
        if constant.numel():
            raise ValueError(f"X has constant columns {constant.tolist()[:10]}: their noise "
                             "scale is 0 and the score is undefined; drop them")
        to_backend = (lambda t: t.cpu().numpy()) if data.device.type == "cpu" else (lambda t: t)
        cov = to_backend(data.T @ data / n)
        if w_init is None:
            W = cov * 0.0
            start = to_backend(norms)
            sigma = float(start.min()) if self.variance == "ev" else start
        else:
            init, _ = as_tensor("w_init", w_init, ndim=2, dtype=torch.float64,
                                device=data.device)
            if tuple(init.shape) != (d, d):
                raise ValueError(f"w_init must have shape ({d}, {d}), got {tuple(init.shape)}")
            W = to_backend(init)
            sigma = optimal_scale(W, cov, self.variance, self.sigma_min)
            if self.variance == "ev":
                sigma = float(sigma)
        solver = Solver(cov, self.variance, float(self.lambda1), float(self.sigma_min),
                         float(self.beta_1), float(self.beta_2), self.checkpoint,
                         float(self.tol))
        mu = float(self.mu_init)
        history: list[dict[str, float]] = []
        total = 0
        for t, s in enumerate(schedule):
            iters = self.max_iter if t == self.T - 1 else self.warm_iter
            lr, restarts = float(self.lr), 0
            while True:
                stage = solver.run(W, sigma, mu, iters, s, lr)
                total += stage.n_iter
                if stage.success:
                    break
                lr *= 0.5  # official: restart the stage with a smaller step and a larger s
                s += 0.1
                restarts += 1
            W, sigma = stage.W, stage.sigma
            history.append({"stage": float(t), "s": s, "mu": mu, "lr": lr,
                            "n_iter": float(stage.n_iter), "restarts": float(restarts),
                            "objective": stage.objective, "score": stage.score, "h": stage.h})
            mu *= float(self.mu_factor)
        W_t = torch.as_tensor(W, dtype=torch.float64)
        self.W_ = restore(W_t.to(kind.dtype), kind)
        sigma_t = torch.as_tensor(sigma, dtype=torch.float64)
        self.sigma_ = float(sigma_t) if self.variance == "ev" else restore(
            sigma_t.to(kind.dtype), kind)
        self.adjacency_ = to_dag(self.W_, float(self.threshold))
        self.n_iter_ = total
        self.history_ = tuple(history)
        self.n_features_in_ = d
        return self

    def _graph_export(self, package: str, method: str) -> tuple[Any, list[Any], np.ndarray]:
        """``package`` imported, the node names and ``adjacency_`` as numpy, for an export."""
        try:
            module = importlib.import_module(package)
        except ImportError as error:
            raise ImportError(f"CoLiDE.{method} needs {package}: pip install {package} "
                              "(or pip install 'regzoo[graph]')") from error
        if not hasattr(self, "adjacency_"):
            raise ValueError("this CoLiDE is not fitted yet: call fit(X) first")
        names = getattr(self, "feature_names_in_", None)
        names = list(range(self.n_features_in_)) if names is None else list(names)
        return module, names, torch.as_tensor(self.adjacency_).detach().cpu().numpy()

    def to_networkx(self, *, weighted: bool = True) -> Any:
        """The estimated DAG ``adjacency_`` as a ``networkx.DiGraph``.

        Every variable is a node, named by the DataFrame's columns (else 0..d−1); an edge
        i → j for each non-zero entry, with attribute ``weight`` = W_ij when ``weighted``.

        Raises:
            ImportError: networkx is not installed (``pip install 'regzoo[graph]'``).
            ValueError: the estimator is not fitted.
        """
        nx, names, adjacency = self._graph_export("networkx", "to_networkx")
        graph = nx.DiGraph()
        graph.add_nodes_from(names)
        for i, j in zip(*np.nonzero(adjacency), strict=True):
            attributes = {"weight": float(adjacency[i, j])} if weighted else {}
            graph.add_edge(names[i], names[j], **attributes)
        return graph

    def to_dataframe(self) -> Any:
        """The estimated DAG ``adjacency_`` as a labelled ``pandas.DataFrame``.

        Rows are the causes and columns the effects, both labelled by the variables' names.

        Raises:
            ImportError: pandas is not installed (``pip install 'regzoo[graph]'``).
            ValueError: the estimator is not fitted.
        """
        pd, names, adjacency = self._graph_export("pandas", "to_dataframe")
        return pd.DataFrame(adjacency, index=names, columns=names)
