"""Linear SEM simulator and DAG metrics: reproducibility, graph laws, noise laws, metrics."""

import numpy as np
import pytest
import torch

from regzoo.data.sem import count_accuracy, is_dag, simulate_linear_sem


@pytest.mark.parametrize("graph", ["er", "sf"])
def test_same_seed_same_data_and_other_seed_other_data(graph):
    a = simulate_linear_sem(10, 50, 20, graph=graph, seed=3)
    b = simulate_linear_sem(10, 50, 20, graph=graph, seed=3)
    c = simulate_linear_sem(10, 50, 20, graph=graph, seed=4)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.W, b.W)
    assert not np.array_equal(a.W, c.W)


def test_simulation_does_not_touch_the_global_rng():
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    simulate_linear_sem(8, 20, 16, seed=1)
    assert np.random.random() == before


@pytest.mark.parametrize("graph", ["er", "sf"])
def test_graph_is_a_dag_with_weights_in_range(graph):
    for seed in range(5):
        sem = simulate_linear_sem(15, 5, 30, graph=graph, seed=seed)
        assert is_dag(sem.W)
        weights = np.abs(sem.W[sem.W != 0])
        assert weights.size > 0 and weights.min() >= 0.5 and weights.max() <= 2.0
        assert (sem.W > 0).any() and (sem.W < 0).any()


def test_er_edge_count_matches_its_expectation():
    counts = [int(simulate_linear_sem(30, 2, 60, seed=s).adjacency.sum()) for s in range(40)]
    # Binomial(435, 60/435): mean 60, sd ≈ 7.2; the mean of 40 draws has sd ≈ 1.1.
    assert abs(np.mean(counts) - 60) < 4


def test_scale_free_has_m_parents_per_new_node():
    sem = simulate_linear_sem(20, 2, 40, graph="sf", seed=0)
    assert int(sem.adjacency.sum()) == 2 * 18 + 1  # node 1 has one earlier node, the rest two


@pytest.mark.parametrize("noise", ["gaussian", "exponential", "laplace", "gumbel"])
def test_noise_variance_is_matched(noise):
    sem = simulate_linear_sem(3, 200_000, 1, noise=noise, var=4.0, seed=0)
    roots = ~sem.adjacency.any(axis=0)
    residual = sem.X - sem.X @ sem.W
    assert np.allclose(residual[:, roots].var(axis=0), 4.0, rtol=0.03)


def test_non_equal_variances_lie_in_their_range_and_drive_the_residuals():
    sem = simulate_linear_sem(10, 100_000, 10, variance="nv", seed=2)
    assert sem.noise_var.min() >= 0.5 and sem.noise_var.max() <= 10.0
    assert np.ptp(sem.noise_var) > 1.0
    residual = sem.X - sem.X @ sem.W
    assert np.allclose(residual.var(axis=0), sem.noise_var, rtol=0.03)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="graph"):
        simulate_linear_sem(5, 10, 5, graph="ba")
    with pytest.raises(ValueError, match="noise"):
        simulate_linear_sem(5, 10, 5, noise="cauchy")
    with pytest.raises(ValueError, match="d must be"):
        simulate_linear_sem(1, 10, 5)
    with pytest.raises(ValueError, match="var"):
        simulate_linear_sem(5, 10, 5, var=0.0)


def test_is_dag_detects_cycles_and_self_loops():
    chain = np.triu(np.ones((4, 4)), k=1)
    assert is_dag(chain) and is_dag(torch.from_numpy(chain))
    cyclic = chain.copy()
    cyclic[3, 0] = 1.0
    assert not is_dag(cyclic)
    loop = np.zeros((3, 3))
    loop[1, 1] = 1.0
    assert not is_dag(loop)


def test_count_accuracy_of_identical_graphs_is_perfect():
    W = simulate_linear_sem(12, 2, 24, seed=0).W
    metrics = count_accuracy(W, W)
    assert metrics == {"shd": 0.0, "tpr": 1.0, "fdr": 0.0, "fpr": 0.0,
                       "nnz": float((W != 0).sum())}


def test_count_accuracy_counts_a_reversal_an_extra_and_a_missing_edge():
    true = np.zeros((4, 4))
    true[0, 1] = true[1, 2] = true[2, 3] = 1.0
    est = np.zeros((4, 4))
    est[1, 0] = 1.0  # reversed
    est[1, 2] = 1.0  # correct
    est[0, 3] = 1.0  # extra; 2 → 3 is missing
    m = count_accuracy(true, est)
    assert m["shd"] == 3.0 and m["nnz"] == 3.0
    assert m["tpr"] == pytest.approx(1 / 3) and m["fdr"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(2 / 3)  # 2 wrong / (6 − 3) negatives


def test_count_accuracy_agrees_with_dagma_on_random_graphs():
    utils = pytest.importorskip("dagma.utils")
    rng = np.random.default_rng(0)
    for seed in range(10):
        true = simulate_linear_sem(10, 2, 15, seed=seed).adjacency
        est = np.triu(rng.random((10, 10)) < 0.2, k=1)
        perm = rng.permutation(10)
        est = est[np.ix_(perm, perm)]
        theirs = utils.count_accuracy(true.astype(float), est.astype(float))
        ours = count_accuracy(true, est)
        for key in ("shd", "tpr", "fdr", "fpr", "nnz"):
            assert ours[key] == pytest.approx(theirs[key])
