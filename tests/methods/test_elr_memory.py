"""ELR's target memory for users: label issues read from it, and its size options
(memory_dtype, memory_device) equal to the float32 default within the dtype's precision."""

import pytest
import torch

from regzoo.data import TensorBatches
from regzoo.methods.elr import EarlyLearningRegularization
from regzoo.methods.pskd import ProgressiveSelfKnowledgeDistillation


def _blobs(seed, n=600, c=4, flip_rate=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, 10, generator=g) * 4
    y = torch.randint(0, c, (n,), generator=g)
    x = centres[y] + torch.randn(n, 10, generator=g)
    flipped = torch.rand(n, generator=g) < flip_rate
    return x, torch.where(flipped, (y + 1) % c, y), flipped


def _train(criterion, x, labels, seed, epochs=10):
    torch.manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], criterion.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(epochs):
        for xb, yb, ib in TensorBatches(x, labels, 50, seed=seed):
            loss = criterion(model(xb), yb, ib)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


@pytest.mark.parametrize("seed", range(3))
def test_label_issues_recover_the_flipped_labels_of_separable_blobs(seed):
    # Measured on seeds 0–4: F1 0.988–1.000 (30 % pair flips, linear model, 10 epochs).
    x, labels, flipped = _blobs(seed)
    criterion = EarlyLearningRegularization(len(labels), 4)
    _train(criterion, x, labels, seed)
    issues = criterion.label_issues(labels)
    assert issues.precision_recall_f1(flipped)["f1"] > 0.95
    scores = issues.scores[issues.indices]
    assert bool((scores[:-1] >= scores[1:]).all())


def test_label_issues_before_training_and_with_other_labels_raise():
    criterion = EarlyLearningRegularization(10, 3)
    with pytest.raises(ValueError, match="never updated"):
        criterion.label_issues(torch.zeros(10, dtype=torch.long))
    criterion(torch.randn(10, 3), torch.zeros(10, dtype=torch.long), torch.arange(10))
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        criterion.label_issues(torch.zeros(9, dtype=torch.long))


def test_pskd_label_issues_read_the_prediction_table():
    criterion = ProgressiveSelfKnowledgeDistillation(4, 3, total_epochs=2)
    with pytest.raises(ValueError, match="prediction table has 4 of 4 rows never updated"):
        criterion.label_issues(torch.zeros(4, dtype=torch.long))
    logits = torch.tensor([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [4.0, 0, 0]])
    criterion(logits, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    issues = criterion.label_issues(torch.tensor([0, 2, 2, 1]))
    assert issues.indices.tolist() == [1, 3]


@pytest.mark.parametrize(("dtype", "atol"), [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_low_precision_memory_matches_float32_within_its_precision(dtype, atol):
    x, labels, _ = _blobs(0, n=200)
    reference = EarlyLearningRegularization(200, 4)
    low = EarlyLearningRegularization(200, 4, memory_dtype=dtype)
    _train(reference, x, labels, 0, epochs=3)
    _train(low, x, labels, 0, epochs=3)
    assert low.targets.dtype == dtype
    assert low.targets.element_size() * 2 == reference.targets.element_size()
    torch.testing.assert_close(low.targets.float(), reference.targets, rtol=0, atol=atol)


def test_pinned_memory_ignores_module_casts_and_moves():
    criterion = EarlyLearningRegularization(8, 3, memory_dtype=torch.bfloat16)
    assert criterion.double().targets.dtype == torch.bfloat16
    cpu_pinned = EarlyLearningRegularization(8, 3, memory_device="cpu")
    # The meta device stands in for a GPU: the module moves, the memory stays on the host.
    moved = cpu_pinned.to("meta")
    assert moved.targets.device == torch.device("cpu")
    assert EarlyLearningRegularization(8, 3).to("meta").targets.device.type == "meta"
    assert cpu_pinned.double().targets.dtype == torch.float64


def test_cpu_memory_gives_the_default_loss_and_a_bf16_memory_round_trips_state():
    logits = torch.randn(6, 3, dtype=torch.float64)
    target, index = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([5, 1, 7, 2, 0, 3])
    default = EarlyLearningRegularization(8, 3).double()
    pinned = EarlyLearningRegularization(8, 3, memory_device="cpu").double()
    torch.testing.assert_close(pinned(logits, target, index), default(logits, target, index),
                               rtol=0, atol=0)
    low = EarlyLearningRegularization(8, 3, memory_dtype=torch.bfloat16)
    low(logits.float(), target, index)
    again = EarlyLearningRegularization(8, 3, memory_dtype=torch.bfloat16)
    again.load_state_dict(low.state_dict())
    assert torch.equal(again.targets, low.targets) and again.targets.dtype == torch.bfloat16


def test_memory_options_reject_bad_values_by_name():
    with pytest.raises(TypeError, match=r"memory_dtype must be a floating torch\.dtype"):
        EarlyLearningRegularization(8, 3, memory_dtype=torch.int32)
    with pytest.raises(TypeError, match="memory_dtype"):
        EarlyLearningRegularization(8, 3, memory_dtype="bfloat16")
    with pytest.raises(ValueError, match="memory_device must name a device"):
        EarlyLearningRegularization(8, 3, memory_device="nowhere")
