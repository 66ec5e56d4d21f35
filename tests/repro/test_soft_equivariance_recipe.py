"""The official PER training recipe of the soft-equivariance reproduction (issue 24): cosine
learning rate, L2 on the regularised linear layers only, the gated nonlinearity's residual path
with its own decay; the plain recipe as labelled arms."""

import math

import pytest
import torch

from regzoo.repro.soft_equivariance import (
    SoftEquivarianceConfig,
    TensorNet,
    arm_recipe,
    build_inertia_arm,
    cosine_lr,
)


def test_cosine_lr_is_the_official_schedule():
    assert cosine_lr(1e-2, 0, 600) == 1e-2
    assert cosine_lr(1e-2, 300, 600) == pytest.approx(5e-3)
    assert cosine_lr(1e-2, 600, 600, min_lr=1e-4) == pytest.approx(1e-4)
    assert cosine_lr(2.0, 150, 600, 1.0) == pytest.approx(1 + 0.5 * (1 + math.cos(math.pi / 4)))


def test_official_l2_is_half_squared_norms_of_the_linears_plus_the_gated_decay():
    torch.manual_seed(0)
    net = TensorNet((4, 2, 2), 2, gate_init=1e-3)
    for block in net.blocks:
        block.w_gated.data.uniform_(-1, 1)
    by_hand = 2e-4 * sum(0.5 * (lin.weight.square().sum() + lin.bias.square().sum())
                         for lin in net.linears())
    by_hand = by_hand + 1.0 * sum(b.w_gated.square().sum() for b in net.blocks)
    torch.testing.assert_close(net.official_l2(2e-4, 1.0), by_hand)
    coef = net.blocks[0].coef["dot"]
    coef.data.fill_(100.0)  # bilinear coefficients carry no L2 in the official recipe
    torch.testing.assert_close(net.official_l2(2e-4, 1.0), by_hand)


def test_gated_residual_path_starts_at_gate_init_and_vanishes_at_zero():
    torch.manual_seed(0)
    plain = TensorNet((4, 2, 2), 2)
    torch.manual_seed(0)
    gated = TensorNet((4, 2, 2), 2, gate_init=0.0)
    x = torch.randn(8, plain.rep_in.dim)
    torch.testing.assert_close(gated(x), plain(x), rtol=0, atol=0)
    torch.manual_seed(0)
    assert all(torch.equal(b.w_gated, torch.full_like(b.w_gated, 1e-3))
               for b in TensorNet((4, 2, 2), 2, gate_init=1e-3).blocks)


def test_only_the_soft_networks_get_the_gated_path_and_plain_arms_map_to_their_model():
    config = SoftEquivarianceConfig.tiny()
    assert arm_recipe(config, "per_auto_plain") == ("per_auto", "plain")
    assert arm_recipe(config, "mlp") == ("mlp", "official")
    soft, _ = build_inertia_arm(config, "per_auto")
    plain, _ = build_inertia_arm(config, "per_auto_plain")
    hard, _ = build_inertia_arm(config, "emlp_o3")
    assert all(b.w_gated is not None for b in soft.blocks)
    assert all(b.w_gated is None for b in plain.blocks)
    assert all(b.w_gated is None for b in hard.blocks)
    with pytest.raises(ValueError, match="recipe must be one of"):
        SoftEquivarianceConfig(recipe="paper")


@pytest.mark.parametrize(("arm", "l2_decays", "adam_decay"), [
    ("per_auto", (2e-5, 1.0), 0.0),          # the sweeps' wd on the linears, gated_wd on w_gated
    ("mlp", None, 0.0),                      # official: no L2 reaches the MLP
    ("per_auto_plain", None, 2e-4),          # plain: Adam's coupled decay on every parameter
])
def test_each_recipe_gets_its_own_decay(monkeypatch, arm, l2_decays, adam_decay):
    import regzoo.repro.soft_equivariance as se

    seen = {}
    monkeypatch.setattr(TensorNet, "official_l2",
                        lambda self, wd, gated: seen.setdefault("l2", (wd, gated)) and 0.0)
    adam = torch.optim.Adam
    monkeypatch.setattr(se.torch.optim, "Adam", lambda params, lr, weight_decay: (
        seen.setdefault("adam", weight_decay), adam(params, lr=lr))[1])
    config = SoftEquivarianceConfig.tiny()
    se.run_inertia(config, arm, 0, torch.device("cpu"))
    assert seen.get("l2") == l2_decays and seen["adam"] == adam_decay


@pytest.mark.parametrize("field", ["weight_decay", "plain_weight_decay", "gated_wd",
                                   "b_weight_decay"])
def test_a_negative_decay_is_refused(field):
    with pytest.raises(ValueError, match=f"{field} must be >= 0"):
        SoftEquivarianceConfig(**{field: -1e-4})
