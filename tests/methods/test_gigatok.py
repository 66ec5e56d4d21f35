"""GigaTok: entropy-loss closed forms, semantic-loss invariants, the tokenizer's limiting cases."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from regzoo.methods.gigatok import (
    OFFICIAL_ENTROPY_EPS,
    SemanticRegularizer,
    TokenizerConfig,
    VQTokenizer,
    match_token_grid,
    negative_mean_cosine,
    tokenizer_loss,
    vq_entropy_loss,
)


def _one_hot_affinity(codes, num_codes, dtype=torch.float64):
    """Affinities −‖z − e‖² of unit vectors sitting on their codes (0) vs elsewhere (−4)."""
    affinity = torch.full((len(codes), num_codes), -4.0, dtype=dtype)
    affinity[torch.arange(len(codes)), torch.as_tensor(codes)] = 0.0
    return affinity


# --- entropy loss -------------------------------------------------------------------------------

def test_confident_balanced_assignment_reaches_the_minimum_minus_log_k():
    k = 64
    loss = vq_entropy_loss(_one_hot_affinity(torch.arange(k).repeat(3), k))
    assert float(loss) == pytest.approx(-math.log(k), abs=1e-9)


def test_uniform_and_collapsed_assignments_give_zero():
    assert float(vq_entropy_loss(torch.zeros(7, 32, dtype=torch.float64))) == pytest.approx(
        0.0, abs=1e-12)
    collapsed = _one_hot_affinity([5] * 9, 32)
    assert float(vq_entropy_loss(collapsed)) == pytest.approx(0.0, abs=1e-9)


def test_official_eps_moves_the_closed_forms_as_the_corrections_say():
    # Uniform at K = 16384: log K − (−log(1/K + 1e-5)) = log(1 + 1e-5 K) = +0.152.
    uniform = vq_entropy_loss(torch.zeros(4, 16384, dtype=torch.float64),
                              eps=OFFICIAL_ENTROPY_EPS)
    assert float(uniform) == pytest.approx(0.1517, abs=1e-4)
    # Confident balanced: −log(1/K + 1e-5) instead of −log K (−9.552 at K = 16384; K = 1024 here
    # to keep the N ≥ K matrix small).
    k = 1024
    balanced = vq_entropy_loss(_one_hot_affinity(torch.arange(k), k), eps=OFFICIAL_ENTROPY_EPS)
    assert float(balanced) == pytest.approx(math.log(1 / k + 1e-5), abs=1e-9)
    assert -math.log(1 / 16384 + 1e-5) == pytest.approx(9.552, abs=1e-3)


def _numpy_entropy_loss(a, tau, eps):
    logits = a / tau
    logits = logits - logits.max(1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    sample = -(p * np.log(p)).sum(1).mean()
    p_bar = p.mean(0)
    return sample + (p_bar * np.log(p_bar + eps)).sum()


@pytest.mark.parametrize("eps", [0.0, OFFICIAL_ENTROPY_EPS])
@pytest.mark.parametrize("tau", [0.01, 0.5, 3.0])
def test_equals_a_numpy_brute_force(eps, tau):
    rng = np.random.default_rng(3)
    a = -rng.uniform(0, 4, size=(37, 11))
    value = vq_entropy_loss(torch.from_numpy(a), tau, eps=eps)
    assert float(value) == pytest.approx(_numpy_entropy_loss(a, tau, eps), rel=1e-10, abs=1e-12)


def test_chunked_equals_unchunked_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    a = (-4 * torch.rand(2, 19, 23, generator=g, dtype=torch.float64)).requires_grad_()
    full = vq_entropy_loss(a, 0.1)
    (grad_full,) = torch.autograd.grad(full, a)
    chunked = vq_entropy_loss(a, 0.1, chunk_size=5)
    (grad_chunked,) = torch.autograd.grad(chunked, a)
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(grad_chunked, grad_full)


def test_gradient_matches_finite_differences_and_stays_finite_on_unreachable_codes():
    g = torch.Generator().manual_seed(1)
    a = (-2 * torch.rand(6, 5, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: vq_entropy_loss(x, 0.3, chunk_size=4), (a,))
    # τ = 0.01 on distances up to 4: p̄ of far codes underflows to 0; the gradient stays finite.
    far = _one_hot_affinity([0, 1, 0, 1], 8, torch.float32).requires_grad_()
    vq_entropy_loss(far).backward()
    assert bool(torch.isfinite(far.grad).all())


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"tau": 0.0}, ValueError, "tau must be > 0"),
    ({"tau": -0.01}, ValueError, "tau must be > 0"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"eps": -1e-5}, ValueError, "eps"),
])
def test_entropy_loss_refuses_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        vq_entropy_loss(torch.zeros(3, 4), **kwargs)


def test_entropy_loss_refuses_bad_affinities():
    with pytest.raises(ValueError, match="NaN"):
        vq_entropy_loss(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"shape \(..., K\)"):
        vq_entropy_loss(torch.zeros(5))
    with pytest.raises(TypeError, match="floating"):
        vq_entropy_loss(torch.zeros(3, 4, dtype=torch.long))


# --- semantic regulariser -----------------------------------------------------------------------

def test_semantic_loss_is_minus_one_for_identical_and_plus_one_for_negated_features():
    f = torch.randn(3, 16, 8, dtype=torch.float64)
    assert float(negative_mean_cosine(f, f)) == pytest.approx(-1.0)
    assert float(negative_mean_cosine(-f, f)) == pytest.approx(1.0)


def test_semantic_loss_is_invariant_to_per_token_scale():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(4, 16, 8, generator=g, dtype=torch.float64)
    t = torch.randn(4, 16, 8, generator=g, dtype=torch.float64)
    scale_s = torch.rand(4, 16, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    scale_t = torch.rand(4, 16, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    torch.testing.assert_close(negative_mean_cosine(s * scale_s, t * scale_t),
                               negative_mean_cosine(s, t))


def test_regularizer_is_weight_times_the_cosine_of_its_mlp_head():
    torch.manual_seed(0)
    sem = SemanticRegularizer(12, 8, weight=0.5).double()
    widths = [m.out_features for m in sem.head if isinstance(m, nn.Linear)]
    assert widths == [48, 48, 8]          # w → 4w → 4w → D (official distill_mlp)
    assert sum(isinstance(m, nn.SiLU) for m in sem.head) == 2
    h = torch.randn(2, 16, 12, dtype=torch.float64)
    f = torch.randn(2, 16, 8, dtype=torch.float64)
    torch.testing.assert_close(sem(h, f), 0.5 * negative_mean_cosine(sem.head(h), f))


def test_no_gradient_reaches_the_teacher_or_its_features():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(2), nn.Linear(4, 6))  # (B, 16, 2, 2) → (B, 16, 6)
    sem = SemanticRegularizer(5, 6, teacher=teacher)
    sem.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    h = torch.randn(3, 16, 5, requires_grad=True)
    images = torch.randn(3, 16, 2, 2, requires_grad=True)
    sem(h, images).backward()
    assert images.grad is None and all(p.grad is None for p in teacher.parameters())
    assert h.grad is not None and h.grad.abs().sum() > 0
    features = torch.randn(3, 16, 6, requires_grad=True)
    SemanticRegularizer(5, 6)(h, features).backward()
    assert features.grad is None


def test_token_grids_are_matched_by_bilinear_interpolation():
    tokens = torch.randn(2, 4, 3, dtype=torch.float64)     # a 2×2 grid
    assert match_token_grid(tokens, 4) is tokens
    up = match_token_grid(tokens, 16)
    expected = torch.nn.functional.interpolate(
        tokens.transpose(1, 2).reshape(2, 3, 2, 2), size=(4, 4), mode="bilinear",
        align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(up, expected)
    constant = torch.ones(1, 4, 3)
    assert float(negative_mean_cosine(constant, torch.ones(1, 16, 3))) == pytest.approx(-1.0)


def test_semantic_regularizer_refuses_bad_input():
    sem = SemanticRegularizer(5, 6)
    h = torch.randn(2, 16, 5)
    f = torch.randn(2, 16, 6)
    with pytest.raises(ValueError, match="hidden has width 4 but student_dim is 5"):
        sem(torch.randn(2, 16, 4), f)
    with pytest.raises(ValueError, match=r"teacher features must have shape \(B, N_T, 6\)"):
        sem(h, torch.randn(2, 16, 7))
    with pytest.raises(ValueError, match="not a square grid"):
        sem(torch.randn(2, 6, 5), f)
    with pytest.raises(ValueError, match="batch"):
        sem(h, f[:1])
    with pytest.raises(ValueError, match="NaN"):
        sem(torch.full((2, 16, 5), float("nan")), f)
    with pytest.raises(ValueError, match="NaN"):
        sem(h, torch.full((2, 16, 6), float("nan")))
    with pytest.raises(ValueError, match="weight"):
        SemanticRegularizer(5, 6, weight=-0.5)
    with pytest.raises(ValueError, match="no teacher"):
        sem.teacher_features(torch.randn(2, 1, 8, 8))


# --- tokenizer and the full loss ----------------------------------------------------------------

def _images(n=8, seed=0, dtype=torch.float64):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed),
                      dtype=dtype) * 2 - 1


def test_zero_weights_equal_plain_vq_training():
    torch.manual_seed(0)
    model = VQTokenizer(TokenizerConfig(width=16, decoder_depth=2, num_codes=16)).double()
    x = _images()
    plain = tokenizer_loss(model, x, entropy_weight=0.0)
    z = model.encode(x)
    q = model.quantizer(z)
    rec, _ = model.decode(q.z_hat)
    by_hand = torch.nn.functional.mse_loss(rec, x) + q.quantization_loss + q.commitment_loss
    torch.testing.assert_close(plain.total, by_hand)
    assert set(plain.parts) == {"rec", "vq", "commit"}
    sem = SemanticRegularizer(16, 6, weight=0.0).double()
    zero = tokenizer_loss(model, x, semantic=sem, semantic_target=torch.randn(8, 16, 6).double(),
                          entropy_weight=0.0)
    torch.testing.assert_close(zero.total, plain.total)
    grads_plain = torch.autograd.grad(plain.total, list(model.parameters()))
    grads_zero = torch.autograd.grad(zero.total, list(model.parameters()))
    for a, b in zip(grads_plain, grads_zero):
        torch.testing.assert_close(a, b)


def test_the_loss_adds_each_regulariser_with_its_weight():
    torch.manual_seed(0)
    model = VQTokenizer(TokenizerConfig(width=16, decoder_depth=2, num_codes=16)).double()
    sem = SemanticRegularizer(16, 6).double()
    target = torch.randn(8, 16, 6, dtype=torch.float64)
    out = tokenizer_loss(model, _images(), semantic=sem, semantic_target=target,
                         entropy_weight=0.005)
    p = out.parts
    torch.testing.assert_close(out.total, p["rec"] + p["vq"] + p["commit"]
                               + 0.005 * p["entropy"] + p["semantic"])
    torch.testing.assert_close(p["entropy"], vq_entropy_loss(
        model.quantizer.affinity(out.output.latents), 0.01))


def test_rotation_trick_is_the_default_and_straight_through_an_option():
    assert TokenizerConfig().estimator == "rotation" and TokenizerConfig().beta == 0.25
    torch.manual_seed(0)
    st = VQTokenizer(TokenizerConfig(width=16, estimator="straight_through"))
    assert st.quantizer.estimator == "straight_through" and st.quantizer.metric == "cosine"
    out = st(_images(dtype=torch.float32))
    torch.testing.assert_close(out.quantized.z_hat, out.quantized.z_q)


@pytest.mark.parametrize("latent_tokens", [None, 6])
def test_two_and_one_dimensional_tokenizers_decode_their_own_tokens(latent_tokens):
    torch.manual_seed(0)
    cfg = TokenizerConfig(width=16, decoder_depth=2, num_codes=32, latent_tokens=latent_tokens)
    model = VQTokenizer(cfg).eval()
    x = _images(dtype=torch.float32)
    out = model(x)
    tokens = model.tokenize(x)
    assert tokens.shape == (8, 16 if latent_tokens is None else 6)
    assert torch.equal(tokens, out.quantized.indices)
    assert out.hidden.shape == (8, 16, 16)            # the decoder's grid tokens
    rec, hidden = model.decode_tokens(tokens)
    torch.testing.assert_close(rec, out.reconstruction)
    torch.testing.assert_close(hidden, out.hidden)


def test_a_few_steps_lower_the_reconstruction_loss():
    torch.manual_seed(0)
    model = VQTokenizer(TokenizerConfig(width=16, decoder_depth=2, num_codes=16))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = _images(32, dtype=torch.float32)
    first = None
    for _ in range(30):
        loss = tokenizer_loss(model, x)
        first = float(loss.parts["rec"].detach()) if first is None else first
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    assert float(loss.parts["rec"].detach()) < 0.7 * first


def test_tokenizer_refuses_bad_input():
    with pytest.raises(ValueError, match="distill_depth 3 exceeds decoder_depth 2"):
        TokenizerConfig(decoder_depth=2, distill_depth=3)
    with pytest.raises(ValueError, match="patch_size 3 must divide image_size 8"):
        TokenizerConfig(patch_size=3)
    with pytest.raises(ValueError, match="estimator"):
        TokenizerConfig(estimator="gumbel")
    model = VQTokenizer(TokenizerConfig(width=16, num_codes=8))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\)"):
        model(torch.zeros(2, 1, 6, 6))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 8\)"):
        model.decode_tokens(torch.full((1, 16), 8))
    with pytest.raises(TypeError, match="SemanticRegularizer"):
        tokenizer_loss(model, torch.zeros(2, 1, 8, 8), semantic=nn.Linear(2, 2))


# --- parity with vector-quantize-pytorch --------------------------------------------------------

def test_nearest_codes_agree_with_vector_quantize_pytorch():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    ours = VQTokenizer(TokenizerConfig(num_codes=64)).quantizer
    peer = vqp.VectorQuantize(dim=8, codebook_size=64, use_cosine_sim=True,
                              rotation_trick=True, commitment_weight=0.25).eval()
    with torch.no_grad():
        peer._codebook.embed.copy_(ours.codebook()[None])
    z = torch.randn(4, 16, 8)
    quantized, indices, _ = peer(z)
    out = ours(z)
    assert torch.equal(indices, out.indices)
    torch.testing.assert_close(quantized, out.z_q)
