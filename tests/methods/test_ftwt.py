"""FTWT: ground-truth masks, predictors, gradient isolation, the binariser and the MAC counter."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.methods.ftwt import (
    DELTA,
    FTWT,
    MaskedBlock,
    filter_scores,
    mass_ground_truth,
    straight_through_binarize,
    uniform_ground_truth,
)
from regzoo.models.small import CNN

TAUS = (0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)


def _outputs(seed, batch=6, channels=9, dead=2):
    """ReLU-like block outputs (B, C, 3, 3) with distinct scores and ``dead`` zero filters."""
    g = torch.Generator().manual_seed(seed)
    out = torch.rand(batch, channels, 3, 3, generator=g, dtype=torch.float64)
    out[:, :dead] = 0.0
    return out


def _brute_force(out, tau, crossing):
    """The kept set by enumeration: the largest prefix within τ, or the smallest reaching it."""
    mask = torch.zeros(out.shape[:2], dtype=torch.float64)
    for i, scores in enumerate(out.abs().flatten(2).amax(2)):
        shares = scores / scores.sum()
        if tau == 1.0:
            mask[i] = (shares > DELTA).double()
            continue
        order = sorted(range(len(shares)), key=lambda k: -float(shares[k]))
        total = 0.0
        for k in order:
            before, total = total, total + float(shares[k])
            if (total <= tau + DELTA) if crossing == "drop" else (before < tau - DELTA):
                mask[i, k] = 1.0
    return mask


@pytest.mark.parametrize("crossing", ["drop", "keep"])
@pytest.mark.parametrize("seed", range(4))
def test_mass_masks_match_brute_force_enumeration(seed, crossing):
    out = _outputs(seed)
    for tau in TAUS:
        torch.testing.assert_close(
            mass_ground_truth(out, tau, crossing=crossing),
            _brute_force(out, tau, crossing),
            rtol=0,
            atol=0,
        )


def test_the_filter_crossing_tau_is_dropped_by_default_and_kept_with_crossing_keep():
    out = torch.tensor([[0.5, 0.3, 0.2, 0.0]]).reshape(1, 4, 1, 1)  # shares .5 .3 .2 0
    assert mass_ground_truth(out, 0.7).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert mass_ground_truth(out, 0.7, crossing="keep").tolist() == [[1.0, 1.0, 0.0, 0.0]]
    # a prefix landing exactly on τ keeps the same set under both rules
    assert mass_ground_truth(out, 0.8).tolist() == [[1.0, 1.0, 0.0, 0.0]]
    assert mass_ground_truth(out, 0.8, crossing="keep").tolist() == [[1.0, 1.0, 0.0, 0.0]]
    # the official rule keeps nothing when the top filter alone exceeds τ
    assert mass_ground_truth(out, 0.4).tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_tau_one_keeps_exactly_the_filters_that_fired():
    out = _outputs(0, dead=3)
    mask = mass_ground_truth(out, 1.0)
    assert mask[:, :3].sum() == 0 and mask[:, 3:].eq(1).all()


def test_an_input_on_which_no_filter_fires_keeps_nothing():
    out = torch.zeros(2, 5, 2, 2)
    for tau in (0.5, 1.0):
        assert mass_ground_truth(out, tau).sum() == 0


@pytest.mark.parametrize("crossing", ["drop", "keep"])
def test_kept_count_is_monotone_non_decreasing_in_tau(crossing):
    out = _outputs(5, batch=20, channels=16)
    grid = torch.linspace(0.05, 1.0, 40).tolist()
    counts = torch.stack([mass_ground_truth(out, t, crossing=crossing).sum(1) for t in grid])
    assert (counts[1:] >= counts[:-1]).all()


def test_filter_scores_are_the_spatial_max_of_the_absolute_output():
    out = torch.tensor([[[[1.0, -3.0], [2.0, 0.5]]]])
    assert filter_scores(out).tolist() == [[3.0]]
    assert filter_scores(torch.tensor([[-2.0, 1.0]])).tolist() == [[2.0, 1.0]]


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.75, 1.0])
def test_uniform_masks_drop_exactly_floor_fraction_of_the_filters(fraction):
    out = _outputs(1, channels=12, dead=0)
    mask = uniform_ground_truth(out, fraction)
    dropped = int(fraction * 12)
    assert mask.sum(1).eq(12 - dropped).all()
    lowest = filter_scores(out).argsort(1)[:, :dropped]
    assert mask.gather(1, lowest).sum() == 0


def test_uniform_masks_also_drop_dead_filters_beyond_the_fraction():
    out = _outputs(2, channels=10, dead=4)  # 4 dead, fraction drops 2: the dead ones already
    assert uniform_ground_truth(out, 0.2).sum(1).eq(6).all()
    out = _outputs(2, channels=10, dead=1)  # 1 dead among the 3 lowest
    assert uniform_ground_truth(out, 0.3).sum(1).eq(7).all()


def test_straight_through_binariser_is_zero_one_forward_and_identity_backward():
    p = torch.tensor([0.1, 0.5, 0.50001, 0.9], requires_grad=True)
    out = straight_through_binarize(p)
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0]
    weights = torch.tensor([1.0, -2.0, 3.0, 0.5])
    (out * weights).sum().backward()
    torch.testing.assert_close(p.grad, weights)


def _cnn(seed=0):
    torch.manual_seed(seed)
    model = CNN((8, 8), 10, channels=(6, 8, 8)).double()
    model.eval()
    return model


def test_predictors_with_a_huge_bias_give_the_dense_model():
    dense = _cnn()
    model = copy.deepcopy(dense)
    handle = FTWT.apply(model, predictor_init="random", threshold=0.5)
    x = torch.rand(5, 64, dtype=torch.float64)
    model(x)
    assert min(handle.keep_fractions()) < 1  # random predictors switch filters off
    with torch.no_grad():
        for block in handle.blocks:
            block.predictor.linear.bias.fill_(1e6)
    torch.testing.assert_close(model(x), dense(x), rtol=0, atol=0)
    assert handle.keep_fractions() == [1.0, 1.0, 1.0]


def test_the_default_predictors_start_all_on_and_keep_the_function():
    dense = _cnn()
    model = copy.deepcopy(dense)
    handle = FTWT.apply(model)
    x = torch.rand(4, 64, dtype=torch.float64)
    torch.testing.assert_close(model(x), dense(x), rtol=0, atol=0)
    assert [type(m) for m in model.body][:3] == [MaskedBlock, nn.Identity, nn.Identity]
    assert len(handle.blocks) == 3  # the head has no ReLU after it: never masked


def test_masked_filters_are_exactly_zero_and_the_rest_untouched():
    dense = _cnn(1)
    model = copy.deepcopy(dense)
    handle = FTWT.apply(model, predictor_init="random")
    x = torch.rand(3, 64, dtype=torch.float64)
    masked = model.body[0](x.reshape(3, 1, 8, 8))
    plain = dense.body[2](dense.body[1](dense.body[0](x.reshape(3, 1, 8, 8))))
    mask = handle.blocks[0].last.mask
    torch.testing.assert_close(masked, plain * mask[:, :, None, None], rtol=0, atol=0)


def _grads(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def test_decoupled_mode_isolates_the_two_losses_in_both_directions():
    model = _cnn(2).train()
    handle = FTWT.apply(model, predictor_init="random", threshold=0.8)
    x, y = torch.rand(8, 64, dtype=torch.float64), torch.randint(0, 10, (8,))
    task = F.cross_entropy(model(x), y)
    mask = handle.mask_loss()
    assert all(g.abs().max() == 0 for g in _grads(mask, handle.backbone_parameters()))
    assert all(g.abs().max() == 0 for g in _grads(task, handle.predictor_parameters()))
    assert any(g.abs().max() > 0 for g in _grads(mask, handle.predictor_parameters()))
    assert any(g.abs().max() > 0 for g in _grads(task, handle.backbone_parameters()))


def test_joint_mode_lets_the_mask_loss_reach_the_backbone_but_not_the_task_loss_the_predictors():
    model = _cnn(2).train()
    handle = FTWT.apply(model, predictor_init="random", threshold=0.8, mode="joint")
    x, y = torch.rand(8, 64, dtype=torch.float64), torch.randint(0, 10, (8,))
    task = F.cross_entropy(model(x), y)
    first_conv = handle.blocks[0].layer.weight
    assert _grads(handle.mask_loss(), [first_conv])[0].abs().max() > 0
    assert all(g.abs().max() == 0 for g in _grads(task, handle.predictor_parameters()))


def test_a_live_straight_through_binariser_lets_the_task_loss_reach_the_predictors():
    model = _cnn(2).train()
    handle = FTWT.apply(model, predictor_init="random", straight_through=True)
    x, y = torch.rand(8, 64, dtype=torch.float64), torch.randint(0, 10, (8,))
    task = F.cross_entropy(model(x), y)
    assert any(g.abs().max() > 0 for g in _grads(task, handle.predictor_parameters()))
    assert set(handle.blocks[1].last.mask.unique().tolist()) <= {0.0, 1.0}


def test_mask_loss_is_the_batch_mean_of_the_filter_sum_of_bce_averaged_over_blocks():
    model = _cnn(3).train()
    handle = FTWT.apply(model, predictor_init="random")
    model(torch.rand(5, 64, dtype=torch.float64))
    expected = 0.0
    for block in handle.blocks:
        logits, truth = block.last.logits, block.last.ground_truth
        p = torch.sigmoid(logits)
        bce = -(truth * torch.log(p) + (1 - truth) * torch.log(1 - p))
        expected += bce.sum() / logits.shape[0] / len(handle.blocks)
    torch.testing.assert_close(handle.mask_loss(), expected)
    torch.testing.assert_close(handle.penalty(), expected)


def test_mask_weight_drops_to_zero_at_the_cooldown():
    handle = FTWT.apply(_cnn(), cooldown=0.5, mask_weight=2.0)
    weights = []
    for epoch in range(10):
        handle.set_epoch(epoch, 10)
        weights.append(handle.mask_weight)
    assert weights == [2.0] * 5 + [0.0] * 5


def test_mask_accuracy_compares_masks_with_the_ground_truth():
    model = _cnn(4)
    handle = FTWT.apply(model)  # all on
    model(torch.rand(6, 64, dtype=torch.float64))
    expected = sum(float(b.last.ground_truth.mean()) for b in handle.blocks) / 3
    assert handle.mask_accuracy() == pytest.approx(expected, abs=1e-12)


def test_pretraining_all_on_turns_random_predictors_on():
    model = _cnn(5).train()
    handle = FTWT.apply(model, predictor_init="random")
    batches = [torch.rand(16, 64, dtype=torch.float64) for _ in range(4)]
    model(batches[0])
    assert min(handle.keep_fractions()) < 1
    handle.pretrain_all_on(batches * 50, steps=200, lr=0.5)
    model(batches[0])
    assert handle.keep_fractions() == [1.0, 1.0, 1.0]


def _tiny_chain():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def _first(count):
    def rule(out):
        mask = torch.zeros(out.shape[:2], dtype=out.dtype)
        mask[:, :count] = 1
        return mask

    return rule


def test_mac_counter_matches_hand_counts():
    model = _tiny_chain()
    handle = FTWT.apply(model)
    x = torch.rand(3, 2, 5, 5)
    dense = 4 * 2 * 9 * 25 + 6 * 4 * 9 * 25 + 6 * 3  # 1800 + 5400 + 18
    count = handle.macs(x)
    assert count.dense == dense
    # all on, the predictors' 2·4 + 4·6 multiply-accumulates on top
    assert count.per_example.tolist() == [dense + 8 + 24] * 3
    handle.force_masks([_first(2), _first(3)])  # half of each block: no predictors run
    halved = 2 * 2 * 9 * 25 + 3 * 2 * 9 * 25 + 3 * 3  # 900 + 1350 + 9
    assert handle.macs(x).per_example.tolist() == [halved] * 3
    assert handle.macs(x).reduction == pytest.approx(1 - halved / dense)
    official = handle.macs(x, counting="official")  # masked convs only, head left out
    assert official.per_example.tolist() == [900 + 1350] * 3 and official.dense == dense


def test_official_counter_floors_grouped_inputs_and_the_exact_one_counts_active_pairs():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=4),
        nn.ReLU(),
    ).eval()
    handle = FTWT.apply(model)
    handle.force_masks([_first(2), _first(4)])
    x = torch.rand(1, 1, 3, 3)
    exact = handle.macs(x).per_example.item()
    assert exact == 2 * 1 * 1 * 9 + 2 * 1 * 9 * 9  # depthwise: only the 2 fed channels count
    assert handle.macs(x, counting="official").per_example.item() == 2 * 9 + 0  # ⌊2/4⌋ = 0


def test_the_counter_refuses_a_chain_it_cannot_follow():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
            self.other = nn.Conv2d(3, 6, 1)

        def forward(self, x):
            return self.body(x).sum(1, keepdim=True) + self.other(x)

    model = Skip()
    handle = FTWT.apply(model)
    with pytest.raises(ValueError, match="chain"):
        handle.macs(torch.rand(1, 3, 2, 2))


def test_remove_restores_plain_modules_and_merge_keeps_the_blocks():
    dense = _cnn()
    model = copy.deepcopy(dense)
    handle = FTWT.apply(model)
    handle.merge()
    assert isinstance(model.body[0], MaskedBlock)
    handle.unmerge()
    handle.remove()
    assert [type(m) for m in model.body] == [type(m) for m in dense.body]
    x = torch.rand(2, 64, dtype=torch.float64)
    torch.testing.assert_close(model(x), dense(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="removed"):
        handle.mask_loss()


def test_an_mlp_masks_its_hidden_units():
    from regzoo.models.small import MLP

    model = MLP(16, 4, hidden=(8, 8))
    handle = FTWT.apply(model, predictor_init="random")
    model(torch.rand(5, 16))
    assert [b.last.mask.shape for b in handle.blocks] == [(5, 8), (5, 8)]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"threshold": 0.0}, ValueError, r"threshold must lie in \(0, 1\]"),
        ({"threshold": 1.5}, ValueError, "threshold"),
        ({"threshold": -0.2}, ValueError, "threshold"),
        ({"threshold": True}, TypeError, "threshold"),
        ({"threshold": "0.9"}, TypeError, "threshold"),
        ({"mode": "both"}, ValueError, "mode"),
        ({"gt_type": "static"}, ValueError, "gt_type"),
        ({"crossing": "half"}, ValueError, "crossing"),
        ({"predictor_init": "ones"}, ValueError, "predictor_init"),
        ({"pool": 0}, ValueError, "pool"),
        ({"softmax": 1}, TypeError, "softmax"),
        ({"cooldown": 1.5}, ValueError, "cooldown"),
        ({"mask_weight": -1.0}, ValueError, "mask_weight"),
        ({"targets": ["body.1"]}, ValueError, "must name a Conv/Linear"),
        ({"targets": [("body.0", "body.2")]}, ValueError, "must name a Conv/Linear"),
        ({"targets": "body.0"}, TypeError, "targets"),
    ],
)
def test_bad_options_are_refused_before_the_model_changes(options, error, match):
    model = _cnn()
    before = [type(m) for m in model.modules()]
    with pytest.raises(error, match=match):
        FTWT.apply(model, **options)
    assert [type(m) for m in model.modules()] == before


def test_other_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="no Conv/Linear"):
        FTWT.apply(nn.Sequential(nn.Linear(3, 2)))
    model = _cnn()
    handle = FTWT.apply(model)
    with pytest.raises(RuntimeError, match="forward pass"):
        handle.penalty()
    with pytest.raises(ValueError, match="already carries"):
        FTWT.apply(model)
    with pytest.raises(ValueError, match="epoch must be < epochs"):
        handle.set_epoch(10, 10)
    with pytest.raises(ValueError, match="one entry per masked block"):
        handle.force_masks([None])
    with pytest.raises(ValueError, match="counting"):
        handle.macs(torch.rand(1, 64, dtype=torch.float64), counting="thop")
    with pytest.raises(ValueError, match="threshold"):
        mass_ground_truth(torch.rand(2, 3, 2, 2), 0.0)
    mlp_handle = FTWT.apply(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))
    with pytest.raises(ValueError, match="flatten"):
        mlp_handle.model(torch.rand(2, 5, 4))


def test_counting_macs_leaves_batchnorm_statistics_and_the_training_mode_alone():
    model = _cnn(6).train()
    handle = FTWT.apply(model, predictor_init="random")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handle.macs(torch.rand(4, 64, dtype=torch.float64))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Residual(nn.Module):
    """A ResNet basic block: relu(bn2(conv2(relu(bn1(conv1 x)))) + x), one shared ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def test_a_residual_block_is_masked_before_the_addition_with_tuple_targets():
    torch.manual_seed(0)
    block = _Residual().eval()
    dense = copy.deepcopy(block)
    handle = FTWT.apply(
        block,
        predictor_init="random",
        threshold=0.8,
        targets=[("conv1", "bn1", "relu"), ("conv2", "bn2")],
    )
    x = torch.rand(3, 4, 5, 5)
    out = block(x)
    m1, m2 = (b.last.mask[:, :, None, None] for b in handle.blocks)
    h = dense.relu(dense.bn1(dense.conv1(x))) * m1
    torch.testing.assert_close(out, dense.relu(dense.bn2(dense.conv2(h)) * m2 + x))
    # conv1's ground truth is read after the ReLU, conv2's from |BN(conv2)| before the addition
    torch.testing.assert_close(
        handle.blocks[1].last.ground_truth, mass_ground_truth(dense.bn2(dense.conv2(h)), 0.8)
    )
    assert isinstance(block.relu, nn.ReLU)  # the shared ReLU stays in place
    handle.remove()
    assert [type(m) for m in block.children()] == [type(m) for m in dense.children()]
