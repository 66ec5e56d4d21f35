"""QuantNAS: quantisation noise, mixed (op × bit) layers, regularisers, BitOps, ADQ, LSQ, search."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from regzoo.methods.quantnas import (
    ADQ,
    LSQQuantizer,
    MixedQuantOp,
    QuantConv,
    QuantNASConfig,
    QuantNASNet,
    QuantNASSuperNet,
    arch_entropy,
    entropy_schedule,
    fit_quantnas,
    hwgq,
    quantization_noise,
)


def _one_hot(n, index):
    return F.one_hot(torch.tensor(index), n).float()


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_gaussian_noise_std_is_range_over_levels_over_two(bits):
    torch.manual_seed(0)
    t = torch.linspace(-1.0, 3.0, 1_000_000)
    noise = quantization_noise(t, bits)
    expected = 4.0 / (2**bits - 1) / 2
    assert noise.std().item() == pytest.approx(expected, rel=0.02)
    assert abs(noise.mean().item()) < 0.01 * expected
    assert not noise.requires_grad


def test_uniform_noise_is_the_rounding_error_of_the_grid():
    torch.manual_seed(0)
    t = torch.linspace(0.0, 1.0, 1_000_000)
    noise = quantization_noise(t, 4, "uniform")
    unit = 1.0 / 15
    assert noise.abs().max().item() <= unit / 2
    assert noise.std().item() == pytest.approx(unit / math.sqrt(12), rel=0.02)


def test_noise_scale_roughly_halves_per_extra_bit():
    torch.manual_seed(0)
    t = torch.randn(200_000)
    ratio = quantization_noise(t, 3).std() / quantization_noise(t, 2).std()
    assert ratio.item() == pytest.approx(3 / 7, rel=0.02)


def _noise_reference(op, x, bits_index):
    """Replay the noise draws of a one-hot noise-mode layer: only bit ``bits_index`` counts."""
    holder = op.weights[op.ops[0]]
    w, rx = holder.weight, torch.relu(x)
    draws = [(quantization_noise(w, b), quantization_noise(rx, b)) for b in op.bits]
    a_fp = 1 / (len(op.bits) + 1)
    a = 1 / (1 + a_fp)
    nw, nx = draws[bits_index]
    return holder.conv(a_fp * rx + a * (rx + nx), a_fp * w + a * (w + nw))


@pytest.mark.parametrize("bits_index", [0, 1])
def test_one_hot_noise_layer_is_one_op_at_one_bit_plus_the_full_precision_share(bits_index):
    torch.manual_seed(0)
    op = MixedQuantOp(4, 4, ["conv3x3", "conv1x1"], [4, 8])
    x = torch.randn(2, 4, 5, 5)
    probs = _one_hot(4, bits_index)  # op 0 (conv3x3) at bit ``bits_index``
    torch.manual_seed(1)
    out = op(x, probs)
    torch.manual_seed(1)
    assert torch.allclose(out, _noise_reference(op, x, bits_index), atol=1e-6)
    out.sum().backward()
    assert op.weights["conv1x1"].weight.grad is None  # the other op never ran


@pytest.mark.parametrize("form", ["shared", "per_bit"])
def test_one_hot_direct_layer_is_lsq_weights_and_hwgq_inputs_at_that_bit(form):
    torch.manual_seed(0)
    op = MixedQuantOp(4, 6, ["conv1x1", "conv5x5"], [4, 8], mode="direct", direct_form=form)
    x = torch.randn(3, 4, 6, 6)
    holder = op.weights["conv5x5"]
    expected = holder.conv(hwgq(x, 8), holder.lsq[1](holder.weight))
    assert torch.allclose(op(x, _one_hot(4, 3)), expected, atol=1e-6)


def test_paper_form_passes_every_noisy_share_to_the_weights_the_code_form_only_a_fp():
    torch.manual_seed(0)
    paper = MixedQuantOp(3, 3, ["conv3x3"], [4, 8])
    code = MixedQuantOp(3, 3, ["conv3x3"], [4, 8], detach_noisy=True)
    code.load_state_dict(paper.state_dict())
    x, probs = torch.randn(2, 3, 4, 4), torch.tensor([0.3, 0.7])
    grads = []
    for op in (paper, code):
        torch.manual_seed(5)
        (op(x, probs) ** 2).sum().backward()
        grads.append(op.weights["conv3x3"].weight.grad)
    a_fp = 1 / 3
    coefficient = a_fp + probs.sum() / (probs.sum() + a_fp)
    assert torch.allclose(grads[0], grads[1] * coefficient / a_fp, rtol=1e-4, atol=1e-6)


def test_mixed_layer_output_scales_with_the_op_probability_mass():
    torch.manual_seed(0)
    op = MixedQuantOp(2, 2, ["skip", "conv1x1"], [4, 8])
    x = torch.randn(1, 2, 3, 3)
    assert torch.allclose(op(x, torch.tensor([0.25, 0.25, 0.0, 0.0])), 0.5 * x)


def test_entropy_of_one_hot_is_zero_and_of_uniform_is_log_n():
    assert arch_entropy([torch.tensor([60.0, 0.0, 0.0, 0.0])]).item() == pytest.approx(0, abs=1e-6)
    total = arch_entropy([torch.zeros(8), torch.zeros(3)])
    assert total.item() == pytest.approx(math.log(8) + math.log(3), rel=1e-6)


def test_entropy_gradient_pushes_towards_the_current_argmax():
    alpha = torch.tensor([1.0, 0.2, -0.3], requires_grad=True)
    arch_entropy([alpha]).backward()
    # Gradient descent raises the leading logit and lowers the others.
    assert alpha.grad[0] < 0 and alpha.grad[2] > 0


def test_entropy_gradient_matches_finite_differences():
    alpha = torch.tensor([0.5, -0.2, 0.1, 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: arch_entropy([a]), (alpha,))


def test_entropy_schedule_values_of_the_official_configs():
    values = [entropy_schedule(e, 20, 9) for e in range(20)]
    assert values[:11] == [0.0] * 11  # warm-up 9 plus a quarter (2 epochs) of the rest
    assert values[11] == pytest.approx(0.2 * math.log(2) / math.log(10))
    assert values[19] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(values))


def test_expected_bitops_hand_count_and_linear_in_p():
    op = MixedQuantOp(4, 6, ["conv3x3", "conv3x3_g2"], [4, 8])
    macs = 4 * 6 * 9 * 5 * 7
    p = torch.tensor([0.25, 0.75, 0.0, 0.0])
    assert op.expected_bitops(p, 5, 7).item() == pytest.approx(2 * macs * (0.25 * 4 + 0.75 * 8))
    grouped = torch.tensor([0.0, 0.0, 1.0, 0.0])
    assert op.expected_bitops(grouped, 5, 7).item() == pytest.approx(2 * macs / 2 * 4)
    q = torch.tensor([0.1, 0.2, 0.3, 0.4])
    mixed = op.expected_bitops(0.3 * p + 0.7 * q, 5, 7)
    assert mixed.item() == pytest.approx(
        0.3 * op.expected_bitops(p, 5, 7).item() + 0.7 * op.expected_bitops(q, 5, 7).item()
    )


def test_final_net_bitops_hand_count():
    net = QuantNASNet(
        [("conv1x1", 4), ("skip", 8), ("conv3x3", 8), ("conv5x5", 4), ("conv3x3_g2", 4)], channels=4
    )
    hw = 6 * 5
    head = 1 * 4 * 9 * hw * 8**2
    body = 4 * 4 * 1 * hw * 16 + 0 + 4 * 4 * 9 * hw * 64 + 4 * 4 * 25 * hw * 16
    upsample = 4 * 4 * 9 // 2 * hw * 16
    assert net.bitops(6, 5) == pytest.approx(head + body + upsample)


def test_adq_with_unit_scale_reduces_to_body_of_bn_plus_skip_and_std_is_per_sample():
    torch.manual_seed(0)
    adq = ADQ(3)
    with torch.no_grad():
        adq.phi.weight.zero_()
        adq.phi.bias.fill_(1.0)
    x = torch.randn(4, 3, 5, 5)
    body = torch.nn.Conv2d(3, 3, 1)
    assert torch.allclose(adq(x, body), body(adq.bn(x)) + x, atol=1e-6)
    fresh = ADQ(3)
    out = fresh(x, body)
    x2 = x.clone()
    x2[0] *= 3.0
    out2 = fresh(x2, body)
    # Another sample's spread changes nothing for sample 1 beyond the batch norm statistics.
    fresh.bn.eval()
    a, b = fresh(x, body), fresh(x2, body)
    assert torch.allclose(a[1:], b[1:], atol=1e-6) and not torch.allclose(out, out2)
    plain = ADQ(3, enabled=False)
    assert torch.allclose(plain(x, body), body(x) + x)


@pytest.mark.parametrize("bits", [2, 4])
def test_lsq_takes_at_most_two_to_the_b_values_per_channel(bits):
    torch.manual_seed(0)
    w = torch.randn(3, 4, 3, 3)
    q = LSQQuantizer(bits, w)(w)
    for channel in q:
        assert channel.unique().numel() <= 2**bits
    assert hwgq(torch.randn(1000) * 3, bits).unique().numel() <= 2**bits


def test_lsq_straight_through_gradient_is_identity_inside_the_clip_range():
    w = torch.randn(2, 8) * 0.1
    quantizer = LSQQuantizer(4, w)
    x = torch.cat([w, torch.full((2, 1), 100.0)], dim=1).requires_grad_(True)
    quantizer.step.data = quantizer.step.data.view(2, 1)
    quantizer(x).sum().backward()
    assert torch.equal(x.grad[:, :8], torch.ones(2, 8))
    assert torch.equal(x.grad[:, 8], torch.zeros(2))
    assert quantizer.step.grad is not None


def test_frozen_lsq_steps_are_not_trained():
    q = LSQQuantizer(4, torch.randn(2, 3), trainable=False)
    assert not q.step.requires_grad


def test_supernet_genotype_is_the_argmax_and_discretizes_to_those_layers():
    torch.manual_seed(0)
    net = QuantNASSuperNet(channels=4, body_cells=1, body_layers=1)
    with torch.no_grad():
        net.alphas[0][5] = 3.0  # conv5x5 at 8 bits
        net.alphas[1][0] = 2.0  # conv1x1 at 4 bits
    assert net.genotype() == (("conv5x5", 8), ("conv1x1", 4))
    final = net.discretize()
    assert [c.op for c in final.cells[0]] == ["conv5x5"] and final.upsample.bits == 4
    x = torch.rand(2, 1, 4, 4)
    assert net(x).shape == final(x).shape == (2, 1, 8, 8)


def test_search_steps_alpha_only_after_the_warmup():
    torch.manual_seed(0)
    lr, hr = torch.rand(16, 1, 4, 4), torch.rand(16, 1, 8, 8)
    net = QuantNASSuperNet(channels=4, body_cells=1, body_layers=1, bits=(4, 8))
    result = fit_quantnas(
        net,
        lr,
        hr,
        config=QuantNASConfig(epochs=3, warmup=1, batch_size=4, subsample=1.0),
        progress=False,
    )
    assert result.alpha_steps == 2 * 2  # two α epochs of two batches each
    records = result.history.records
    assert records[0]["mean_max_p"] == pytest.approx(1 / 8)
    assert records[-1]["mean_max_p"] > 1 / 8
    assert records[0]["entropy_weight"] == 0.0


def test_hardware_penalty_moves_probability_to_cheap_choices():
    torch.manual_seed(0)
    lr, hr = torch.rand(32, 1, 4, 4), torch.rand(32, 1, 8, 8)
    net = QuantNASSuperNet(channels=4, body_cells=1, body_layers=1)
    fit_quantnas(
        net,
        lr,
        hr,
        config=QuantNASConfig(
            epochs=4, warmup=1, batch_size=8, alpha_lr=0.05, hardware_weight=1.0, subsample=1.0
        ),
        progress=False,
    )
    assert net.genotype()[0] == ("conv1x1", 4)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MixedQuantOp(4, 4, [], [4]), "ops"),
        (lambda: MixedQuantOp(4, 4, ["conv3x3"], []), "bits"),
        (lambda: MixedQuantOp(4, 4, ["conv7x7"], [4]), "unknown operation"),
        (lambda: MixedQuantOp(4, 2, ["skip"], [4]), "skip"),
        (lambda: MixedQuantOp(4, 4, ["conv3x3"], [5]), "bits"),
        (lambda: MixedQuantOp(4, 4, ["conv3x3"], [4], mode="exact"), "mode"),
        (lambda: QuantNASNet([("conv3x3", 8)] * 3), "genotype"),
        (lambda: QuantNASConfig(epochs=5, warmup=4), "warmup"),
        (lambda: entropy_schedule(0, 5, 4), "warmup"),
        (lambda: arch_entropy([]), "alphas"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_alpha_of_the_wrong_length_is_refused():
    op = MixedQuantOp(2, 2, ["conv1x1", "conv3x3"], [4, 8])
    with pytest.raises(ValueError, match="probs must be a vector of 4"):
        op(torch.randn(1, 2, 3, 3), torch.ones(3) / 3)
    net = QuantNASSuperNet(channels=4, body_cells=1, body_layers=1)
    with pytest.raises(ValueError, match="one vector per searched layer"):
        net(torch.rand(1, 1, 4, 4), net.probabilities()[:1])


def test_search_refuses_targets_of_the_wrong_scale():
    net = QuantNASSuperNet(channels=4, body_cells=1, body_layers=1)
    with pytest.raises(ValueError, match="×2"):
        fit_quantnas(net, torch.rand(8, 1, 4, 4), torch.rand(8, 1, 9, 9))


def test_quant_conv_at_32_bits_is_a_plain_relu_conv():
    conv = QuantConv(2, 3, "conv3x3", 32)
    x = torch.randn(1, 2, 4, 4)
    expected = F.conv2d(torch.relu(x), conv.holder.weight, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-6)
