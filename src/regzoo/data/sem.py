"""Linear structural equation models (SEMs) and the graph metrics of DAG learning.

Simulation follows the protocol of NOTEARS/DAGMA/CoLiDE (CoLiDE's official ``utils.py``,
``simulate_sem``), with every draw taken from one ``numpy.random.Generator`` built from ``seed``
(the official code draws the edge weights from the *global* ``np.random`` state, so its graphs
are not reproducible from its seed; this module has no such state):

* graph: Erdős–Rényi (``"er"``: each pair i < j of a random node order is an edge with
  probability p = 2·edges / (d² − d), so the expected number of edges is ``edges``; "ER4" means
  edges = 4d) or scale-free (``"sf"``: Barabási–Albert preferential attachment with
  m = round(edges / d) edges per new node, each new node a parent of the nodes it attaches to,
  then a random relabelling of the nodes as in DAGMA's ``simulate_dag``);
* weights: W_ij ~ U([−2, −0.5] ∪ [0.5, 2]) on the edges (sign and magnitude drawn separately);
* noise: X = XW + Z with independent Z_j of variance σ_j²: equal variances σ_j² = ``var``
  (``variance="ev"``) or σ_j² ~ U(0.5, 10) (``variance="nv"``, CoLiDE §6); the noise law is
  Gaussian, exponential, Laplace or Gumbel with that variance (exponential and Gumbel noise are
  not centred, as in the official code: the estimators centre X).

Metrics (:func:`count_accuracy`, NOTEARS' ``count_accuracy`` semantics for a DAG estimate):
SHD = extra + missing edges of the skeleton + reversed edges; TPR = correctly oriented / true
edges; FDR = (reversed + false) / predicted edges; FPR = (reversed + false) / (d(d−1)/2 − true);
nnz = predicted edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regzoo.core.checks import check_choice, check_positive_int, check_range

GRAPHS = ("er", "sf")
VARIANCES = ("ev", "nv")
NOISES = ("gaussian", "exponential", "laplace", "gumbel")


@dataclass(frozen=True)
class LinearSEM:
    """One simulated data set.

    Attributes:
        X: ``(n, d)`` samples, float64.
        W: ``(d, d)`` true weighted adjacency, ``W[i, j] != 0`` for an edge i → j.
        noise_var: ``(d,)`` noise variance of each node.
    """

    X: np.ndarray
    W: np.ndarray
    noise_var: np.ndarray

    @property
    def adjacency(self) -> np.ndarray:
        """The true graph as a boolean ``(d, d)`` matrix."""
        return self.W != 0


def _erdos_renyi(d: int, edges: int, rng: np.random.Generator) -> np.ndarray:
    p = min(1.0, 2.0 * edges / (d * d - d))
    upper = np.triu(rng.random((d, d)) < p, k=1)
    order = rng.permutation(d)
    return upper[np.ix_(order, order)]


def _scale_free(d: int, edges: int, rng: np.random.Generator) -> np.ndarray:
    m = max(1, min(d - 1, round(edges / d)))
    dag = np.zeros((d, d), dtype=bool)
    # Preferential attachment: node t joins m distinct earlier nodes drawn with probability
    # proportional to degree + 1 (the +1 lets the first nodes, of degree 0, be chosen).
    degree = np.zeros(d)
    for t in range(1, d):
        k = min(m, t)
        weights = degree[:t] + 1.0
        targets = rng.choice(t, size=k, replace=False, p=weights / weights.sum())
        dag[t, targets] = True
        degree[targets] += 1
        degree[t] += k
    order = rng.permutation(d)
    return dag[np.ix_(order, order)]


def _noise(kind: str, var: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    std = np.sqrt(var)
    size = (n, var.shape[0])
    if kind == "gaussian":
        return rng.normal(scale=std, size=size)
    if kind == "exponential":
        return rng.exponential(scale=std, size=size)
    if kind == "laplace":
        return rng.laplace(scale=std / np.sqrt(2.0), size=size)
    return rng.gumbel(scale=std * np.sqrt(6.0) / np.pi, size=size)


def simulate_linear_sem(
    d: int,
    n: int,
    edges: int,
    *,
    graph: str = "er",
    variance: str = "ev",
    noise: str = "gaussian",
    var: float = 1.0,
    var_range: tuple[float, float] = (0.5, 10.0),
    w_range: tuple[float, float] = (0.5, 2.0),
    seed: int = 0,
) -> LinearSEM:
    """Simulate ``n`` samples of a random linear SEM on ``d`` nodes (module docstring).

    Args:
        d: number of nodes (≥ 2).
        n: number of samples (≥ 1).
        edges: expected (ER) or approximate (SF) number of edges; "ER4" is ``edges=4*d``.
        graph: ``"er"`` or ``"sf"``.
        variance: ``"ev"`` (every noise variance is ``var``) or ``"nv"`` (σ_j² ~ U(var_range)).
        noise: ``"gaussian"``, ``"exponential"``, ``"laplace"`` or ``"gumbel"``.
        var: the equal noise variance.
        var_range: the interval of the non-equal variances (CoLiDE: (0.5, 10)).
        w_range: magnitude interval of the edge weights; signs are ± with probability ½.
        seed: the seed of the one generator every draw comes from.
    """
    d = check_positive_int("d", d, minimum=2)
    n = check_positive_int("n", n)
    edges = check_positive_int("edges", edges, minimum=0)
    check_choice("graph", graph, GRAPHS)
    check_choice("variance", variance, VARIANCES)
    check_choice("noise", noise, NOISES)
    var = check_range("var", var, 0.0, low_inclusive=False)
    low, high = (check_range("var_range", v, 0.0, low_inclusive=False) for v in var_range)
    w_low, w_high = (check_range("w_range", v, 0.0, low_inclusive=False) for v in w_range)
    if low > high or w_low > w_high:
        raise ValueError(f"var_range and w_range must be (low, high) with low <= high, got "
                         f"{var_range} and {w_range}")
    check_positive_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    dag = _erdos_renyi(d, edges, rng) if graph == "er" else _scale_free(d, edges, rng)
    signs = np.where(rng.random((d, d)) < 0.5, -1.0, 1.0)
    W = dag * signs * rng.uniform(w_low, w_high, size=(d, d))
    noise_var = np.full(d, var) if variance == "ev" else rng.uniform(low, high, size=d)
    Z = _noise(noise, noise_var, n, rng)
    # X (I − W) = Z; I − W is invertible (unit triangular up to a permutation) since W is a DAG.
    X = np.linalg.solve((np.eye(d) - W).T, Z.T).T
    return LinearSEM(X=X, W=W, noise_var=noise_var)


def _binary_square(name: str, value: object) -> np.ndarray:
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) matrix, got shape {array.shape}")
    return array != 0


def is_dag(W: object) -> bool:
    """True when the graph with an edge i → j wherever ``W[i, j] != 0`` has no cycle.

    Kahn's algorithm: repeatedly remove the nodes without incoming edges; a cycle remains
    exactly when some node is never removed. Self-loops count as cycles.
    """
    A = _binary_square("W", W)
    indegree = A.sum(axis=0)
    alive = np.ones(A.shape[0], dtype=bool)
    while True:
        sources = alive & (indegree == 0)
        if not sources.any():
            return not alive.any()
        alive &= ~sources
        indegree = indegree - A[sources].sum(axis=0)


def count_accuracy(W_true: object, W_est: object) -> dict[str, float]:
    """SHD, TPR, FDR, FPR and nnz of the estimate ``W_est`` against ``W_true`` (module doc).

    Both are ``(d, d)`` matrices read as graphs (nonzero = edge i → j), numpy or torch.
    """
    true = _binary_square("W_true", W_true)
    est = _binary_square("W_est", W_est)
    if true.shape != est.shape:
        raise ValueError(f"W_true and W_est must have the same shape, got {true.shape} and "
                         f"{est.shape}")
    d = true.shape[0]
    n_true = int(true.sum())
    n_pred = int(est.sum())
    correct = est & true
    reversed_ = est & ~true & true.T
    false_pos = est & ~true & ~true.T
    skeleton_true = np.tril(true | true.T, k=-1)
    skeleton_est = np.tril(est | est.T, k=-1)
    shd = int((skeleton_true ^ skeleton_est).sum() + reversed_.sum())
    wrong = int(reversed_.sum() + false_pos.sum())
    return {
        "shd": float(shd),
        "tpr": float(correct.sum()) / max(n_true, 1),
        "fdr": wrong / max(n_pred, 1),
        "fpr": wrong / max(0.5 * d * (d - 1) - n_true, 1),
        "nnz": float(n_pred),
    }


__all__ = ["LinearSEM", "count_accuracy", "is_dag", "simulate_linear_sem"]
