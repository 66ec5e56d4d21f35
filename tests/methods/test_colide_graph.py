"""CoLiDE for graph users: DataFrame input with its column names, a networkx DiGraph and a
labelled adjacency out, and the same fit with or without pandas installed."""

import sys

import numpy as np
import pytest
import torch

from regzoo.data.sem import simulate_linear_sem
from regzoo.methods.colide import CoLiDE

pd = pytest.importorskip("pandas")
nx = pytest.importorskip("networkx")

FAST = dict(T=2, warm_iter=1000, max_iter=2000, s=(1.0, 0.9))


@pytest.fixture(scope="module")
def problem():
    sem = simulate_linear_sem(5, 800, 5, seed=0)
    names = ["age", "bmi", "glucose", "insulin", "pressure"]
    return sem.X, names


@pytest.fixture(scope="module")
def fitted(problem):
    X, names = problem
    return CoLiDE(**FAST).fit(pd.DataFrame(X, columns=names)), CoLiDE(**FAST).fit(X)


def test_a_dataframe_keeps_its_column_names_and_gives_the_array_fit(fitted, problem):
    named, plain = fitted
    assert list(named.feature_names_in_) == problem[1]
    assert not hasattr(plain, "feature_names_in_")
    np.testing.assert_array_equal(named.W_, plain.W_)


def test_networkx_graph_has_an_edge_per_nonzero_entry_with_its_weight(fitted, problem):
    named, _ = fitted
    names = problem[1]
    graph = named.to_networkx()
    assert list(graph.nodes) == names
    nonzero = {(names[i], names[j]) for i, j in zip(*np.nonzero(named.adjacency_), strict=True)}
    assert set(graph.edges) == nonzero and nonzero
    for a, b in nonzero:
        assert graph.edges[a, b]["weight"] == named.adjacency_[names.index(a), names.index(b)]
    assert nx.is_directed_acyclic_graph(graph)
    assert "weight" not in next(iter(named.to_networkx(weighted=False).edges(data=True)))[2]


def test_dataframe_adjacency_is_labelled_causes_by_effects(fitted, problem):
    named, plain = fitted
    frame = named.to_dataframe()
    assert list(frame.index) == list(frame.columns) == problem[1]
    np.testing.assert_array_equal(frame.to_numpy(), named.adjacency_)
    assert list(plain.to_dataframe().columns) == [0, 1, 2, 3, 4]


def test_a_refit_on_a_tensor_forgets_the_old_names(problem):
    X, names = problem
    estimator = CoLiDE(T=1, warm_iter=10, max_iter=10, s=1.0).fit(pd.DataFrame(X, columns=names))
    estimator.fit(torch.as_tensor(X))
    assert not hasattr(estimator, "feature_names_in_")
    assert list(estimator.to_networkx().nodes) == [0, 1, 2, 3, 4]


def test_graph_exports_need_a_fit_and_name_the_missing_package(monkeypatch, problem):
    with pytest.raises(ValueError, match="not fitted"):
        CoLiDE().to_networkx()
    estimator = CoLiDE(T=1, warm_iter=10, max_iter=10, s=1.0)
    monkeypatch.setitem(sys.modules, "pandas", None)
    monkeypatch.setitem(sys.modules, "networkx", None)
    estimator.fit(problem[0])  # numpy input needs no pandas
    with pytest.raises(ImportError, match="needs networkx"):
        estimator.to_networkx()
    with pytest.raises(ImportError, match="needs pandas"):
        estimator.to_dataframe()
