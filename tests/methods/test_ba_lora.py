"""BA-LoRA: each regulariser against a slow loop, closed forms, gradients, the frozen teacher."""

import copy
import math

import pytest
import torch
from torch import nn

from regzoo.adapters import LowRankLinear
from regzoo.methods.ba_lora import (
    PAPER_WEIGHTS,
    BALoRA,
    consistency_nlg,
    consistency_nlu,
    diversity_nlg,
    diversity_nlu,
    svd_topk_ratio,
)
from regzoo.models import MLP
from regzoo.models.causal_lm import CausalLMConfig, TinyCausalLM, next_token_loss

D = torch.float64


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


# --- reference loops -------------------------------------------------------------------------

def _consistency_nlu_loop(z, z0):
    total = 0.0
    for b in range(z.shape[0]):
        nz = math.sqrt(sum(float(v) ** 2 for v in z[b]))
        n0 = math.sqrt(sum(float(v) ** 2 for v in z0[b]))
        for c in range(z.shape[1]):
            total += (float(z[b, c]) / nz - float(z0[b, c]) / n0) ** 2
    return total / z.numel()


def _diversity_nlu_loop(z):
    b, c = z.shape
    mean = [sum(float(z[n, i]) for n in range(b)) / b for i in range(c)]
    total = 0.0
    for i in range(c):
        for j in range(c):
            if i != j:
                cov = sum((float(z[n, i]) - mean[i]) * (float(z[n, j]) - mean[j])
                          for n in range(b)) / (b - 1)
                total += cov ** 2
    return total / c


def _kl_loop(z, z0):
    total = 0.0
    for b in range(z.shape[0]):
        for t in range(z.shape[1]):
            p = torch.softmax(z[b, t], 0).tolist()
            p0 = torch.softmax(z0[b, t], 0).tolist()
            total += sum(q0 * (math.log(q0) - math.log(q)) for q, q0 in zip(p, p0))
    return total


def _neg_entropy_loop(z):
    values = []
    for b in range(z.shape[0]):
        for t in range(z.shape[1]):
            p = torch.softmax(z[b, t], 0).tolist()
            values.append(sum(q * math.log(q) for q in p))
    return sum(values) / len(values)


def _svd_ratio_loop(matrix, k):
    s = sorted(torch.linalg.svdvals(matrix).tolist(), reverse=True)
    return -sum(s[:k]) / (sum(s) + 1e-10)


# --- the terms -------------------------------------------------------------------------------

def test_nlu_consistency_matches_the_loop_is_zero_on_equal_outputs_and_ignores_row_scale():
    z, z0 = _randn(7, 5, seed=1), _randn(7, 5, seed=2)
    assert float(consistency_nlu(z, z0)) == pytest.approx(_consistency_nlu_loop(z, z0), rel=1e-12)
    assert float(consistency_nlu(z, z.clone())) == 0.0
    scale = torch.rand(7, 1, dtype=D) * 5 + 0.1
    torch.testing.assert_close(consistency_nlu(z * scale, z0), consistency_nlu(z, z0))


def test_nlu_diversity_matches_the_loop_and_closed_forms():
    z = _randn(9, 4, seed=3)
    assert float(diversity_nlu(z)) == pytest.approx(_diversity_nlu_loop(z), rel=1e-12)
    # Uncorrelated columns: centred orthogonal columns with any scales → Cov diagonal → 0.
    q, _ = torch.linalg.qr(_randn(10, 4, seed=4) - _randn(10, 4, seed=4).mean(0))
    centred = torch.cat([torch.ones(10, 1, dtype=D) / math.sqrt(10), q], dim=1)
    q, _ = torch.linalg.qr(centred)
    columns = q[:, 1:] * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D)
    assert float(diversity_nlu(columns + 7.0)) == pytest.approx(0.0, abs=1e-24)
    # Two identical columns a: Cov = var(a)·[[1,1],[1,1]], so L = 2·var(a)² / 2.
    a = _randn(8, 1, seed=5)
    assert float(diversity_nlu(torch.cat([a, a], 1))) == pytest.approx(float(a.var()) ** 2,
                                                                       rel=1e-12)


def test_svd_ratio_closed_forms_scale_invariance_and_both_ranks_of_input():
    low = _randn(8, 2, seed=6) @ _randn(2, 6, seed=7)  # rank 2 ≤ k = 3
    assert float(svd_topk_ratio(low, 3)) == pytest.approx(-1.0, abs=1e-9)  # eps 1e-10
    q, _ = torch.linalg.qr(_randn(8, 5, seed=8))  # five equal singular values
    assert float(svd_topk_ratio(4.0 * q, 3)) == pytest.approx(-3 / 5, abs=1e-9)
    z = _randn(8, 5, seed=9)
    torch.testing.assert_close(svd_topk_ratio(z, 2), svd_topk_ratio(17.0 * z, 2))
    assert float(svd_topk_ratio(z, 2)) == pytest.approx(_svd_ratio_loop(z, 2), rel=1e-12)
    # The official code raises IndexError on exactly these two shapes; ours is per example.
    logits = _randn(8, 12, 50, seed=10)
    expected = sum(_svd_ratio_loop(logits[b], 3) for b in range(8)) / 8
    assert float(svd_topk_ratio(logits, 3)) == pytest.approx(expected, rel=1e-12)
    assert -1.0 <= float(svd_topk_ratio(z, 3)) < -3 / 5


def test_nlg_consistency_is_batchmean_kl_zero_on_equal_and_respects_the_mask():
    z, z0 = _randn(3, 4, 6, seed=11), _randn(3, 4, 6, seed=12)
    total = _kl_loop(z, z0)
    assert float(consistency_nlg(z, z0)) == pytest.approx(total / 3, rel=1e-12)
    assert float(consistency_nlg(z, z0, reduction="mean")) == pytest.approx(total / 12, rel=1e-12)
    torch.testing.assert_close(
        consistency_nlg(z, z0), torch.nn.functional.kl_div(
            torch.log_softmax(z, -1), torch.softmax(z0, -1), reduction="batchmean"))
    assert float(consistency_nlg(z, z.clone())) == pytest.approx(0.0, abs=1e-15)
    assert float(consistency_nlg(z0, z)) > 0
    mask = torch.tensor([[True, True, False, False]] * 3)
    masked = _kl_loop(z[:, :2], z0[:, :2])
    assert float(consistency_nlg(z, z0, mask=mask)) == pytest.approx(masked / 3, rel=1e-12)
    assert float(consistency_nlg(z, z0, mask=mask, reduction="mean")) == pytest.approx(
        masked / 6, rel=1e-12)


def test_nlg_diversity_is_negative_entropy_and_minus_log_v_at_uniform():
    z = _randn(2, 5, 7, seed=13)
    assert float(diversity_nlg(z)) == pytest.approx(_neg_entropy_loop(z), rel=1e-12)
    assert float(diversity_nlg(torch.zeros(2, 3, 7, dtype=D))) == pytest.approx(-math.log(7))
    peaked = torch.zeros(1, 1, 7, dtype=D)
    peaked[..., 0] = 50.0
    assert float(diversity_nlg(peaked)) > float(diversity_nlg(z)) > -math.log(7)
    mask = torch.tensor([[True, False, True, False, False], [False] * 5])
    expected = _neg_entropy_loop(z[:1, [0, 2]])
    assert float(diversity_nlg(z, mask=mask)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("term", ["cons_nlu", "div_nlu", "svd2", "svd3", "cons_nlg", "div_nlg"])
def test_gradients_match_finite_differences(term):
    z0_2, z0_3 = _randn(6, 4, seed=14), _randn(2, 3, 5, seed=15)
    fns = {
        "cons_nlu": (lambda z: consistency_nlu(z, z0_2), (6, 4)),
        "div_nlu": (diversity_nlu, (6, 4)),
        "svd2": (lambda z: svd_topk_ratio(z, 2), (6, 4)),
        "svd3": (lambda z: svd_topk_ratio(z, 2), (2, 3, 5)),
        "cons_nlg": (lambda z: consistency_nlg(z, z0_3), (2, 3, 5)),
        "div_nlg": (diversity_nlg, (2, 3, 5)),
    }
    fn, shape = fns[term]
    z = _randn(*shape, seed=16).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-6)


def test_terms_reject_bad_input_with_clear_errors():
    z = _randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        consistency_nlu(z, _randn(4, 2))
    with pytest.raises(ValueError, match="at least 2 rows"):
        diversity_nlu(z[:1])
    with pytest.raises(ValueError, match="2-D"):
        svd_topk_ratio(_randn(5), 1)
    with pytest.raises(ValueError, match="k must be"):
        svd_topk_ratio(z, 0)
    with pytest.raises(TypeError, match="floating"):
        diversity_nlu(torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="3 dimensions"):
        diversity_nlg(z)
    with pytest.raises(ValueError, match="mask must have shape"):
        diversity_nlg(_randn(2, 3, 4), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        diversity_nlg(_randn(2, 3, 4), mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="no token"):
        diversity_nlg(_randn(2, 3, 4), mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction"):
        consistency_nlg(_randn(2, 3, 4), _randn(2, 3, 4), reduction="sum")


# --- the handle ------------------------------------------------------------------------------

def _mlp():
    torch.manual_seed(0)
    return MLP(6, 5, hidden=(16, 16)).double()


def test_apply_is_pissa_and_keeps_outputs_with_consistency_zero_at_init():
    model = _mlp()
    x = _randn(8, 6, seed=20)
    before = model(x).detach()
    handle = BALoRA.apply(model, rank=4)
    assert all(isinstance(layer, LowRankLinear) and layer.init == "pissa"
               for layer in handle.layers.values())
    assert handle.weights == PAPER_WEIGHTS and handle.k == 3
    out = model(x)
    torch.testing.assert_close(out, before, rtol=1e-10, atol=1e-10)
    consistency = handle.terms(out, inputs=x)["consistency"].detach()
    assert float(consistency) == pytest.approx(0.0, abs=1e-20)


def test_the_teacher_is_the_pretrained_model_not_the_pissa_residual():
    model = _mlp()
    x = _randn(8, 6, seed=21)
    original = copy.deepcopy(model)
    handle = BALoRA.apply(model, rank=4, modules_to_save=())
    residual = copy.deepcopy(model)
    with torch.no_grad():  # what peft's disable_adapter() computes under PiSSA
        for module in residual.modules():
            if isinstance(module, LowRankLinear):
                module.B.zero_()
    optimizer = torch.optim.SGD(handle.trainable_parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    f0 = handle.pretrained_outputs(x)
    with torch.no_grad():
        torch.testing.assert_close(f0, original(x), rtol=1e-12, atol=1e-12)
        assert float((f0 - residual(x)).abs().max()) > 1e-2
        assert float((model(x) - f0).abs().max()) > 1e-3  # the adapted model did move
        assert float(handle.terms(model(x), inputs=x)["consistency"]) > 0
    assert not any(p.requires_grad for p in handle.pretrained.parameters())
    assert not handle.pretrained.training


def test_residual_teacher_is_w_minus_the_principal_part_and_stays_fixed():
    model = _mlp()
    x = _randn(8, 6, seed=22)
    residual = copy.deepcopy(model)
    with torch.no_grad():  # W − U_r Σ_r V_rᵀ on every layer PiSSA adapts (min(in, out) ≥ 4)
        for module in residual.modules():
            if isinstance(module, nn.Linear) and min(module.weight.shape) >= 4:
                U, S, Vh = torch.linalg.svd(module.weight, full_matrices=False)
                module.weight -= U[:, :4] @ torch.diag(S[:4]) @ Vh[:4]
    handle = BALoRA.apply(model, rank=4, teacher="residual")
    f0 = handle.pretrained_outputs(x)
    torch.testing.assert_close(f0, residual(x).detach(), rtol=1e-12, atol=1e-12)
    optimizer = torch.optim.SGD(handle.trainable_parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    torch.testing.assert_close(handle.pretrained_outputs(x), f0, rtol=0, atol=0)
    assert not any(isinstance(m, LowRankLinear) for m in handle.pretrained.modules())
    assert not any(p.requires_grad for p in handle.pretrained.parameters())
    # At the start the adapted model is W itself, so the residual teacher disagrees with it.
    assert float(handle.terms(_mlp()(x), inputs=x)["consistency"]) > 0


def test_regularizer_is_the_weighted_sum_of_the_terms_and_skips_zero_weights():
    model = _mlp()
    handle = BALoRA.apply(model, rank=4, weights=(0.5, 0.2, 0.3))
    x = _randn(8, 6, seed=22)
    with torch.no_grad():
        for layer in handle.layers.values():
            layer.A.add_(0.1 * torch.randn_like(layer.A))
    out = model(x)
    terms = handle.terms(out, inputs=x)
    reg = handle.regularizer(out, inputs=x)
    expected = 0.5 * terms["consistency"] + 0.2 * terms["diversity"] + 0.3 * terms["svd"]
    torch.testing.assert_close(reg.total, expected)
    assert set(reg.parts) == {"consistency", "diversity", "svd"}
    cached = handle.pretrained_outputs(x)
    torch.testing.assert_close(handle.regularizer(out, cached).total, reg.total)
    reg.total.backward()
    assert all(p.grad is not None for p in handle.adapter_parameters())
    only_svd = BALoRA.apply(_mlp(), rank=4, weights=(0.0, 0.0, 1.0))
    out = only_svd.model(x)
    part = only_svd.regularizer(out)  # no inputs needed without the consistency term
    assert set(part.parts) == {"svd"}
    torch.testing.assert_close(part.total, svd_topk_ratio(out, 3))


def test_cached_outputs_work_without_a_copy_and_missing_ones_raise():
    model = _mlp()
    x = _randn(8, 6, seed=23)
    cached = model(x).detach()
    handle = BALoRA.apply(model, rank=4, keep_pretrained=False)
    assert handle.pretrained is None
    consistency = handle.regularizer(model(x), cached).parts["consistency"].detach()
    assert float(consistency) == pytest.approx(0.0, abs=1e-20)
    with pytest.raises(RuntimeError, match="keep_pretrained=False"):
        handle.regularizer(model(x), inputs=x)
    with pytest.raises(ValueError, match="pretrained outputs"):
        handle.regularizer(model(x))
    with pytest.raises(ValueError, match="either"):
        BALoRA.apply(_mlp(), rank=4).regularizer(model(x), cached, inputs=x)


def _lm():
    torch.manual_seed(0)
    return TinyCausalLM(CausalLMConfig(vocab_size=11, max_len=8, d_model=16, n_heads=2,
                                       d_ff=32)).double()


def test_nlg_path_on_the_causal_lm_trains_the_adapters_only():
    model = _lm()
    tokens = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(0))
    before = model(tokens).detach()
    handle = BALoRA.apply(model, target_modules=TinyCausalLM.ADAPTER_TARGETS, rank=4,
                          task="nlg", weights=(1.0, 0.1, 0.1))
    assert len(handle.layers) == 6 * 2
    logits = model(tokens)
    torch.testing.assert_close(logits, before, rtol=1e-9, atol=1e-9)
    terms = handle.terms(logits, inputs=tokens)
    assert float(terms["consistency"].detach()) == pytest.approx(0.0, abs=1e-12)
    expected_svd = sum(_svd_ratio_loop(logits[b].detach(), 3) for b in range(4)) / 4
    assert float(terms["svd"].detach()) == pytest.approx(expected_svd, rel=1e-10)
    optimizer = torch.optim.Adam(handle.trainable_parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        logits = model(tokens)
        loss = next_token_loss(logits, tokens) + handle.regularizer(logits, inputs=tokens).total
        loss.backward()
        optimizer.step()
    assert model.lm_head.weight.grad is None and model.tok_emb.weight.grad is None
    torch.testing.assert_close(handle.pretrained_outputs(tokens), before)
    assert float(handle.terms(model(tokens), inputs=tokens)["consistency"].detach()) > 0
    flat = BALoRA.apply(_lm(), target_modules=["q_proj"], rank=2, task="nlg",
                        svd_on="flattened", weights=(0.0, 0.0, 1.0))
    out = flat.model(tokens)
    torch.testing.assert_close(flat.regularizer(out).total,
                               svd_topk_ratio(out.reshape(4, -1), 3))


def test_remove_restores_plain_layers_and_drops_the_copy():
    model = _mlp()
    x = _randn(3, 6)
    handle = BALoRA.apply(model, rank=4)
    with torch.no_grad():
        for layer in handle.layers.values():
            layer.B.add_(0.05)
    adapted = model(x).detach()
    handle.remove()
    assert all(type(m) in (nn.Linear, nn.ReLU, nn.Sequential, MLP) for m in model.modules())
    torch.testing.assert_close(model(x), adapted)
    assert handle.pretrained is None
    with pytest.raises(RuntimeError, match="removed"):
        handle.regularizer(adapted, adapted)


def test_apply_and_regularizer_reject_bad_arguments():
    x = _randn(4, 6)
    with pytest.raises(ValueError, match="task"):
        BALoRA.apply(_mlp(), rank=4, task="seq2seq")
    with pytest.raises(TypeError, match="weights"):
        BALoRA.apply(_mlp(), rank=4, weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="weights must be >= 0"):
        BALoRA.apply(_mlp(), rank=4, weights=(1.0, -2.0, 0.0))
    with pytest.raises(ValueError, match="svd_on"):
        BALoRA.apply(_mlp(), rank=4, svd_on="pooled")
    with pytest.raises(ValueError, match="k must be"):
        BALoRA.apply(_mlp(), rank=4, k=0)
    with pytest.raises(ValueError, match="rank"):
        BALoRA.apply(_mlp(), rank=99)
    with pytest.raises(TypeError, match="model"):
        BALoRA.apply("not a model")
    with pytest.raises(ValueError, match="teacher"):
        BALoRA.apply(_mlp(), rank=4, teacher="base")
    handle = BALoRA.apply(_mlp(), rank=4)
    out = handle.model(x)
    with pytest.raises(ValueError, match="task='nlu' expects"):
        handle.regularizer(out[None], inputs=x)
    with pytest.raises(ValueError, match="mask is for task='nlg'"):
        handle.regularizer(out, inputs=x, mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="same shape"):
        handle.regularizer(out, out[:, :2])


def test_inputs_the_model_cannot_take_get_an_error_naming_the_argument():
    model = MLP(16, 10, hidden=(32,))
    handle = BALoRA.apply(model, rank=4, target_modules=["body.0"])
    x = torch.randn(8, 16)
    with pytest.raises(ValueError, match=r"inputs= must be the batch the adapted model"):
        handle.regularizer(model(x), inputs=torch.randn(8, 12))
