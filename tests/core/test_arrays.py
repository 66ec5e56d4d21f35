import numpy as np
import pytest
import torch

from regzoo.core.arrays import SolverResult, as_tensor, restore


def test_numpy_round_trip_is_float64_numpy_and_never_aliases_the_input():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    t, kind = as_tensor("x", x, ndim=2)
    assert t.dtype == torch.float64
    t.add_(1.0)
    assert x[0, 0] == 0.0
    back = restore((t, {"a": t}), kind)
    assert isinstance(back[0], np.ndarray) and isinstance(back[1]["a"], np.ndarray)


def test_torch_round_trip_keeps_dtype_and_type():
    x = torch.ones(3, dtype=torch.float32)
    t, kind = as_tensor("x", x)
    assert t.dtype == torch.float32 and t.data_ptr() != x.data_ptr()
    assert isinstance(restore(t, kind), torch.Tensor)
    _, kind_int = as_tensor("y", torch.arange(3))
    assert kind_int.dtype == torch.float32


@pytest.mark.parametrize(
    ("value", "kw", "error", "match"),
    [
        ([1.0, 2.0], {}, TypeError, "numpy array or a torch tensor"),
        (np.array([1.0, np.nan]), {}, ValueError, "NaN"),
        (np.zeros((0, 2)), {}, ValueError, "empty"),
        (np.zeros(3), {"ndim": 2}, ValueError, "2 dimensions"),
        (np.zeros(3), {"ndim": (2, 3)}, ValueError, "2 or 3"),
        (np.array(["a"]), {}, TypeError, "numeric"),
    ],
)
def test_bad_input_names_the_argument(value, kw, error, match):
    with pytest.raises(error, match=match):
        as_tensor("cost", value, **kw)


def test_solver_result_is_frozen():
    result = SolverResult(solution=np.zeros(2), objective=1.0, n_iter=3, converged=True)
    with pytest.raises(AttributeError):
        result.objective = 2.0
