"""DR-Tune (regzoo.methods.dr_tune): calibration algebra, queues, limiting cases, bad input."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.methods.dr_tune import (
    DRTune,
    downstream_centres,
    head_class_weights,
    init_head,
    procrustes_align,
    semantic_calibration,
)

D, C = 6, 3


def _encoder(seed=0, width=D):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, width))


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.arange(n) % C


def _dr(queue_size=8, seed=0, **options):
    encoder = _encoder(seed)
    pretrained = copy.deepcopy(encoder)
    with torch.no_grad():  # the downstream copy has drifted a little
        for p in encoder.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)))
    head = init_head(nn.Linear(D, C), std=0.5, generator=torch.Generator().manual_seed(seed))
    return DRTune(encoder, pretrained, head, C, queue_size=queue_size, **options)


def _batches(x, y, batch):
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)]


def _random_rotation(dim, seed, dtype=torch.float64):
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed),
                                       dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# --- Procrustes -------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_procrustes_recovers_a_known_rotation_and_translation(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    R0, t0 = _random_rotation(5, seed + 10), torch.randn(5, generator=g, dtype=torch.float64)
    R, t = procrustes_align(X, X @ R0.T + t0)
    assert torch.allclose(R, R0, atol=1e-10) and torch.allclose(t, t0, atol=1e-10)
    assert math.isclose(float(torch.linalg.det(R)), 1.0, abs_tol=1e-10)


def test_procrustes_returns_the_best_rotation_when_the_best_orthogonal_map_is_a_reflection():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0],
                                                                          dtype=torch.float64)
    reflection = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    Y = X @ reflection.T
    R, _ = procrustes_align(X, Y)
    assert math.isclose(float(torch.linalg.det(R)), 1.0, abs_tol=1e-12)
    assert torch.allclose(R @ R.T, torch.eye(2, dtype=torch.float64), atol=1e-12)

    def cost(rotation):
        return float(((X - X.mean(0)) @ rotation.T - (Y - Y.mean(0))).pow(2).sum())

    angles = torch.linspace(0, 2 * math.pi, 3601, dtype=torch.float64)
    best = min(cost(torch.stack([torch.stack([a.cos(), -a.sin()]), torch.stack([a.sin(),
                                                                              a.cos()])]))
               for a in angles)
    assert cost(R) <= best + 1e-9
    assert cost(reflection) < cost(R)  # the reflection would fit better: the fix mattered


def test_procrustes_names_mismatched_inputs():
    with pytest.raises(ValueError, match="X and Y must have the same shape"):
        procrustes_align(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(TypeError, match="X must be a floating-point"):
        procrustes_align(torch.ones(5, 3, dtype=torch.int64), torch.randn(5, 3))


# --- semantic calibration ---------------------------------------------------------------------

def _queues(seed=0, k=24):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(k, D, generator=g), torch.randn(k, D, generator=g),
            torch.arange(k) % C, torch.randn(C, D, generator=g))


@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("confidence", [False, True])
def test_class_means_after_translation_equal_the_weighted_downstream_centres(rotate, confidence):
    pretrained, downstream, labels, weights = _queues()
    calibrated = semantic_calibration(pretrained, downstream, labels, weights, None,
                                      rotate=rotate, confidence_weighting=confidence)
    centres = downstream_centres(downstream, labels, weights, confidence_weighting=confidence)
    for c in range(C):
        assert torch.allclose(calibrated[labels == c].mean(0), centres[c], atol=1e-6)


def test_confidence_weights_are_a_softmax_of_the_cosine_to_the_class_weight():
    _, downstream, labels, weights = _queues(seed=3)
    centres = downstream_centres(downstream, labels, weights)
    normed = F.normalize(downstream, dim=1)
    for c in range(C):
        members = normed[labels == c]
        a = torch.softmax(members @ F.normalize(weights[c], dim=0), dim=0)
        assert torch.allclose(centres[c], (a[:, None] * members).sum(0), atol=1e-6)


def test_weights_are_uniform_when_the_class_weight_is_orthogonal_to_every_feature():
    _, downstream, labels, _ = _queues(seed=1)
    downstream[:, -1] = 0.0  # every feature lies in the first D - 1 coordinates
    weights = torch.zeros(C, D)
    weights[:, -1] = 5.0
    weighted = downstream_centres(downstream, labels, weights)
    plain = downstream_centres(downstream, labels, weights, confidence_weighting=False)
    means = torch.stack([F.normalize(downstream, dim=1)[labels == c].mean(0) for c in range(C)])
    assert torch.allclose(weighted, plain, atol=1e-7) and torch.allclose(plain, means, atol=1e-7)


def test_rescaled_rows_have_the_target_norm():
    pretrained, downstream, labels, weights = _queues(seed=2)
    calibrated = semantic_calibration(pretrained, downstream, labels, weights, 3.7)
    assert torch.allclose(calibrated.norm(dim=1), torch.full((24,), 3.7), atol=1e-5)


def test_rotation_without_translation_aligns_the_centred_shape():
    pretrained, _, labels, weights = _queues(seed=4)
    R0 = _random_rotation(D, 5).float()
    normed = F.normalize(pretrained, dim=1)
    downstream = normed @ R0.T  # a rotated copy (row norms kept, so still normalised)
    calibrated = semantic_calibration(pretrained, downstream, labels, weights, None,
                                      translate=False)
    assert torch.allclose(calibrated, downstream - downstream.mean(0), atol=1e-5)


def test_a_class_with_one_member_is_moved_onto_its_downstream_feature():
    pretrained, downstream, labels, weights = _queues(seed=5, k=10)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 2])  # class 2 has one member
    calibrated = semantic_calibration(pretrained, downstream, labels, weights, None,
                                      rotate=False)
    assert torch.allclose(calibrated[9], F.normalize(downstream[9], dim=0), atol=1e-6)
    assert bool(torch.isfinite(calibrated).all())


def test_calibration_without_any_part_is_the_rescaled_queue():
    pretrained, downstream, labels, weights = _queues(seed=6)
    calibrated = semantic_calibration(pretrained, downstream, labels, weights, 2.0,
                                      rotate=False, translate=False)
    assert torch.allclose(calibrated, 2.0 * F.normalize(pretrained, dim=1))


# --- the regulariser and its queues -------------------------------------------------------------

def test_warm_up_loops_the_data_until_no_random_row_survives():
    dr = _dr(queue_size=20)
    x, y = _data(n=7)  # fewer examples than queue rows: the data is repeated
    used = dr.warm_up(_batches(x, y, 3))
    assert bool(dr.written.all()) and used == 8  # passes of 3 + 3 + 1 rows: 7, 14, then 17, 20
    assert torch.equal(dr.pretrained_queue, dr.downstream_queue)
    with torch.no_grad():
        features = dr.pretrained_encoder(x)
    for row, label in zip(dr.pretrained_queue, dr.label_queue):
        match = (features - row).abs().amax(1) < 1e-6
        assert bool(match.any()) and int(y[match][0]) == int(label)


def test_fifo_queue_wraps_around_with_partial_batches():
    dr = _dr(queue_size=5)
    x, y = _data(n=12)
    dr.warm_up(_batches(x[:5], y[:5], 5))
    dr.train()
    pointers = []
    for xb, yb in _batches(x[5:], y[5:], 3):  # batches of 3, 3, 1: pointer 0 → 3 → 1 → 2
        dr(dr.encoder(xb), xb, yb)
        pointers.append(int(dr.queue_ptr))
    assert pointers == [3, 1, 2]
    order = [10, 11, 7, 8, 9]  # row r holds the last example written there
    with torch.no_grad():
        expected = dr.encoder(x[order])
        expected_pre = dr.pretrained_encoder(x[order])
    assert torch.allclose(dr.downstream_queue, expected, atol=1e-6)
    assert torch.allclose(dr.pretrained_queue, expected_pre, atol=1e-6)
    assert torch.equal(dr.label_queue, y[order])


def test_queue_rows_send_gradient_to_the_head_only():
    dr = _dr()
    x, y = _data()
    dr.warm_up(_batches(x, y, 4))
    features = dr.encoder(x[:4])
    dr(features, x[:4], y[:4]).backward()
    assert all(p.grad is None for p in dr.encoder.parameters())
    assert all(p.grad is None for p in dr.pretrained_encoder.parameters())
    assert dr.head.weight.grad is not None and float(dr.head.weight.grad.abs().sum()) > 0


def test_default_weight_makes_the_loss_the_mean_over_batch_and_queue():
    dr = _dr()
    x, y = _data()
    dr.warm_up(_batches(x, y, 4))
    features = dr.encoder(x[:4])
    queue = dr.calibrated_queue(features)
    labels = dr.label_queue.clone()
    official = F.cross_entropy(dr.head(torch.cat([features, queue])), torch.cat([y[:4], labels]))
    assert torch.allclose(dr.loss(features, x[:4], y[:4]), official, atol=1e-6)
    assert dr.weight_for(4) == 8 / 12


def test_zero_dr_weight_equals_plain_fine_tuning_in_loss_and_gradients():
    dr = _dr(dr_weight=0.0)
    x, y = _data()
    dr.warm_up(_batches(x, y, 4))
    plain = copy.deepcopy(dr)
    loss = dr.loss(dr.encoder(x[:4]), x[:4], y[:4])
    reference = F.cross_entropy(plain.head(plain.encoder(x[:4])), y[:4])
    assert torch.equal(loss, reference)
    loss.backward()
    reference.backward()
    for a, b in zip(dr.parameters(), plain.parameters()):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)


def test_the_frozen_encoder_stays_bit_identical_through_training():
    dr = _dr()
    before = copy.deepcopy(dr.pretrained_encoder.state_dict())
    x, y = _data()
    dr.warm_up(_batches(x, y, 4))
    optimizer = torch.optim.SGD(dr.param_groups(0.1, 0.5), momentum=0.9, nesterov=True)
    dr.train()
    for epoch in range(3):
        dr.set_epoch(epoch)
        for xb, yb in _batches(x, y, 4):
            optimizer.zero_grad()
            dr.loss(dr.encoder(xb), xb, yb).backward()
            optimizer.step()
    assert not dr.pretrained_encoder.training
    assert all(torch.equal(before[k], v) for k, v in dr.pretrained_encoder.state_dict().items())
    assert not torch.equal(dr.encoder[0].weight, dr.pretrained_encoder[0].weight)


def test_queues_survive_a_state_dict_round_trip():
    dr = _dr()
    x, y = _data()
    dr.warm_up(_batches(x, y, 4))
    for xb, yb in _batches(x, y, 5):
        dr(dr.encoder(xb), xb, yb)
    restored = _dr(seed=7)
    restored.load_state_dict(dr.state_dict())
    for name in ("pretrained_queue", "downstream_queue", "label_queue", "queue_ptr",
                 "batch_index", "written"):
        assert torch.equal(getattr(dr, name), getattr(restored, name)), name
    assert torch.equal(dr(dr.encoder(x[:4]), x[:4], y[:4]),
                       restored(restored.encoder(x[:4]), x[:4], y[:4]))


def test_rotation_runs_on_every_tenth_call_of_an_epoch():
    dr = _dr(rotate_every=3)
    x, y = _data()
    dr.warm_up(_batches(x, y, 4))
    dr.downstream_queue.copy_(torch.randn(8, D, generator=torch.Generator().manual_seed(0)))
    rotations = []
    for _ in range(5):
        features = dr.encoder(x[:4])
        args = (dr.pretrained_queue, dr.downstream_queue, dr.label_queue, dr.head.weight,
                features.norm(dim=1).mean())
        rotated = semantic_calibration(*args, rotate=True)
        rotations.append(torch.allclose(dr.calibrated_queue(features), rotated, atol=1e-6)
                         and not torch.allclose(semantic_calibration(*args, rotate=False),
                                                rotated, atol=1e-4))
        dr(features, x[:4], y[:4])
    assert rotations == [True, False, False, True, False]
    dr.set_epoch(1)
    assert int(dr.batch_index) == 0


def test_eval_mode_leaves_the_queues_alone():
    dr = _dr()
    x, y = _data()
    dr.warm_up(_batches(x, y, 4))
    dr.eval()
    before = {k: v.clone() for k, v in dr.state_dict().items()}
    dr(dr.encoder(x[:4]), x[:4], y[:4])
    assert all(torch.equal(before[k], v) for k, v in dr.state_dict().items())


def test_init_head_draws_from_a_normal_with_the_official_std():
    head = init_head(nn.Linear(256, 40), generator=torch.Generator().manual_seed(0))
    assert abs(float(head.weight.detach().std()) - 0.01) < 0.0005


# --- a head wrapped by a transform -----------------------------------------------------------

def _wrapped_head(slug):
    """An nn.Linear(D, C) head wrapped by transform ``slug``, its trainable parameters moved."""
    from regzoo.methods.ba_lora import BALoRA
    from regzoo.methods.hag import HardAttentionGates
    from regzoo.methods.rmt import MaskTuning
    from regzoo.methods.sara import SaRA
    from regzoo.methods.sorsa import SORSA

    apply = {"ba_lora": lambda m: BALoRA.apply(m, target_modules=["head"], rank=2),
             "hag": lambda m: HardAttentionGates.apply(m, sites=["head"]),
             "rmt": lambda m: MaskTuning.apply(m, target_modules=["head"], init="uniform",
                                               threshold=0.5, scale=1.0),
             "sara": lambda m: SaRA.apply(m, target_modules=["head"], fraction=0.5),
             "sorsa": lambda m: SORSA.apply(m, target_modules=["head"], rank=2)}[slug]
    torch.manual_seed(3)
    holder = nn.Module()
    holder.head = nn.Linear(D, C).double()
    handle = apply(holder)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in handle.trainable_parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return holder.head


def _closed_form_weight(slug, head):
    """The weight each wrapper computes with, from its own definition."""
    if slug == "hag":
        gate = head.gate.value()
        weight = head.layer.weight
        return gate[:, None] * weight if head.where == "output" else weight * gate
    if slug == "rmt":
        return head.masked_weight()
    if slug == "sara":
        return head.effective_weight()
    return head.weight_matrix() + head.delta_weight()


@pytest.mark.parametrize("slug", ["ba_lora", "hag", "rmt", "sara", "sorsa"])
def test_a_wrapped_heads_class_weights_are_the_weight_it_computes_with(slug):
    head = _wrapped_head(slug)
    expected = _closed_form_weight(slug, head).detach()
    base = head.layer if slug == "hag" else head.base
    assert not torch.allclose(expected, base.weight), "the wrapper must change the map"
    torch.testing.assert_close(head_class_weights(head, D), expected, rtol=0, atol=1e-12)


def test_a_gated_head_gives_the_dr_term_of_the_linear_head_it_folds_into():
    gated = _wrapped_head("hag")
    assert gated.where == "output"
    folded = nn.Linear(D, C).double()
    with torch.no_grad():
        gate = gated.gate.value()
        folded.weight.copy_(gate[:, None] * gated.layer.weight)
        folded.bias.copy_(gate * gated.layer.bias)
    x, y = _data()
    terms = []
    for head in (gated, folded):
        encoder = _encoder().double()
        dr = DRTune(encoder, copy.deepcopy(encoder), head, C, queue_size=8)
        dr.warm_up(_batches(x.double(), y, 4))
        terms.append([dr(encoder(xb), xb, yb) for xb, yb in _batches(x.double(), y, 4)])
    torch.testing.assert_close(torch.stack(terms[0]), torch.stack(terms[1]), rtol=1e-12,
                               atol=1e-12)


def test_reading_the_class_weights_leaves_every_training_flag_as_it_was():
    head = nn.Sequential(nn.Dropout(0.5), nn.Linear(D, C), nn.Dropout(0.5))
    head.train()
    head[2].eval()
    weights = head_class_weights(head, D)
    torch.testing.assert_close(weights, head[1].weight.detach())
    assert [m.training for m in head.modules()] == [True, True, True, False]


# --- bad input --------------------------------------------------------------------------------

def test_the_same_module_as_both_encoders_is_refused():
    encoder = _encoder()
    with pytest.raises(ValueError, match="same module"):
        DRTune(encoder, encoder, nn.Linear(D, C), C)
    shared = nn.Sequential(encoder[0], nn.Linear(8, D))
    with pytest.raises(ValueError, match="share 2 parameters"):
        DRTune(encoder, shared, nn.Linear(D, C), C)


def test_constructor_names_bad_options():
    encoder = _encoder()
    with pytest.raises(ValueError, match="num_classes is 4"):
        DRTune(encoder, copy.deepcopy(encoder), nn.Linear(D, C), 4)
    with pytest.raises(ValueError, match="dr_weight"):
        DRTune(encoder, copy.deepcopy(encoder), nn.Linear(D, C), C, dr_weight=1.5)
    with pytest.raises(TypeError, match="module wrapping exactly one"):
        DRTune(encoder, copy.deepcopy(encoder), nn.Sequential(nn.Linear(D, 8), nn.Tanh(),
                                                             nn.Linear(8, C)), C)
    with pytest.raises(TypeError, match="not affine in its input"):
        DRTune(encoder, copy.deepcopy(encoder), nn.Sequential(nn.Linear(D, C), nn.Tanh()), C)


@pytest.mark.parametrize(("case", "error", "match"), [
    ("queue_smaller_than_batch", ValueError, "queue_size K=8 is smaller than the batch B=12"),
    ("label_out_of_range", ValueError, r"target must lie in \[0, 3\)"),
    ("encoder_width", ValueError, r"features must have shape \(B, 6\)"),
    ("float_target", TypeError, "target must be a 1-D integer tensor"),
    ("batch_mismatch", ValueError, "features must share the batch size"),
])
def test_bad_batches_are_refused_before_any_state_changes(case, error, match):
    dr = _dr()
    x, y = _data()
    dr.warm_up(_batches(x, y, 4))
    features = dr.encoder(x)
    xb, yb = x, y
    if case != "queue_smaller_than_batch":
        xb, yb, features = x[:4], y[:4].clone(), features[:4]
    if case == "label_out_of_range":
        yb[0] = C
    elif case == "encoder_width":
        features = torch.randn(4, D + 1)
    elif case == "float_target":
        yb = yb.float()
    elif case == "batch_mismatch":
        features = features[:3]
    before = {k: v.clone() for k, v in dr.state_dict().items()}
    with pytest.raises(error, match=match):
        dr.loss(features, xb, yb)
    assert all(torch.equal(before[k], v) for k, v in dr.state_dict().items())


def test_pretrained_encoder_width_other_than_the_head_input_is_refused_at_warm_up():
    encoder = _encoder(width=D + 2)
    dr = DRTune(_encoder(), encoder, nn.Linear(D, C), C, queue_size=8)
    x, y = _data()
    with pytest.raises(ValueError, match=r"the encoders' width must equal the head's input width"):
        dr.warm_up(_batches(x, y, 4))
    assert not bool(dr.written.any())


def test_training_before_warm_up_is_refused():
    dr = _dr()
    x, y = _data()
    with pytest.raises(ValueError, match="call warm_up"):
        dr(dr.encoder(x[:4]), x[:4], y[:4])
