"""Quantiser layers: nearest codes, ties, gradient routing of both losses, the rotation trick."""

import math

import pytest
import torch

from regzoo.quantizers import (
    ScalarQuantizer,
    VectorQuantizer,
    codebook_usage,
    perplexity,
    rotate_to,
)


def test_scalar_codebooks_start_as_linspace_and_outputs_are_codebook_values():
    q = ScalarQuantizer(3, 5)
    assert torch.equal(q.codebooks(), torch.linspace(-0.5, 0.5, 5).repeat(3, 1))
    z = torch.randn(64, 3)
    out = q(z)
    books = q.codebooks()
    for j in range(3):
        assert set(out.z_q[:, j].tolist()) <= set(books[j].tolist())
    brute = (z[..., None] - books).abs().argmin(-1)
    assert torch.equal(out.indices, brute)
    torch.testing.assert_close(out.z_hat, out.z_q)


def test_ties_go_to_the_lower_index():
    q = ScalarQuantizer(1, 3)                       # values −0.5, 0, 0.5
    out = q(torch.tensor([[-0.25], [0.25], [0.0]]))
    assert out.indices.flatten().tolist() == [0, 1, 1]


def test_straight_through_gradient_and_loss_routing():
    q = ScalarQuantizer(4, 10)
    z = torch.randn(8, 4, requires_grad=True)
    out = q(z)
    (out.z_hat * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(z.grad, torch.arange(4.0).expand(8, 4))
    assert q.values.grad is None
    z.grad = None
    q(z).quantization_loss.backward()
    assert z.grad is None and q.values.grad.abs().sum() > 0
    q.values.grad = None
    q(z).commitment_loss.backward()
    assert q.values.grad is None and z.grad.abs().sum() > 0
    expected = ((z - q(z).z_q) ** 2).mean()
    torch.testing.assert_close(q(z).commitment_loss, expected)


def test_frozen_and_shared_codebooks():
    frozen = ScalarQuantizer(2, 4, trainable=False)
    assert not list(frozen.parameters()) and "values" in dict(frozen.named_buffers())
    shared = ScalarQuantizer(5, 4, shared=True)
    assert shared.values.shape == (1, 4)
    out = shared(torch.randn(7, 5))
    out.quantization_loss.backward()
    assert shared.values.grad.shape == (1, 4)


def test_rotation_trick_forward_is_the_code_and_backward_is_the_fixed_rotation():
    torch.manual_seed(0)
    z = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randn(6, 5, dtype=torch.float64)
    out = rotate_to(z, target)
    torch.testing.assert_close(out, target)
    # The Jacobian of one row is λR: orthogonal up to the scale λ, mapping z to target.
    row = lambda v: rotate_to(v[None], target[:1])[0]  # noqa: E731
    jac = torch.autograd.functional.jacobian(row, z[0].detach())
    lam = target[0].norm() / z[0].norm()
    torch.testing.assert_close(jac.T @ jac / lam**2, torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(jac @ z[0].detach(), target[0])
    assert torch.linalg.det(jac / lam) > 0      # a rotation, not a reflection


def test_vector_quantizer_nearest_cosine_code_and_losses():
    torch.manual_seed(1)
    vq = VectorQuantizer(32, 4, estimator="straight_through", chunk_size=5)
    z = torch.randn(3, 7, 4, requires_grad=True)
    out = vq(z)
    unit = torch.nn.functional.normalize(z.detach(), dim=-1)
    brute = (unit.reshape(-1, 4) @ vq.codebook().detach().t()).argmax(-1).reshape(3, 7)
    assert torch.equal(out.indices, brute)
    torch.testing.assert_close(out.z_q.norm(dim=-1), torch.ones(3, 7))
    torch.testing.assert_close(out.commitment_loss,
                               0.25 * ((unit - out.z_q.detach()) ** 2).mean())
    out.quantization_loss.backward()
    assert z.grad is None and vq.embedding.grad.abs().sum() > 0
    rotation = VectorQuantizer(32, 4)
    rotation.load_state_dict(vq.state_dict())
    rot = rotation(z)
    torch.testing.assert_close(rot.z_hat, rot.z_q)
    assert torch.equal(rot.indices, out.indices)
    rot.z_hat.sum().backward()
    assert z.grad is not None and bool(torch.isfinite(z.grad).all())


def test_euclidean_vector_quantizer_is_plain_vq_vae():
    torch.manual_seed(2)
    vq = VectorQuantizer(16, 3, beta=1.0, estimator="straight_through", metric="euclidean")
    assert float(vq.embedding.abs().max()) <= (3 / 3) ** 0.5
    z = torch.randn(10, 3, requires_grad=True)
    out = vq(z)
    brute = torch.cdist(z.detach(), vq.embedding.detach()).argmin(-1)
    assert torch.equal(out.indices, brute)
    torch.testing.assert_close(out.z_q, vq.embedding.detach()[brute])
    out.z_hat.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones(10, 3))


def test_vector_quantizer_affinity_is_minus_squared_distance_of_unit_vectors():
    vq = VectorQuantizer(8, 3)
    z = torch.randn(5, 3)
    unit = torch.nn.functional.normalize(z, dim=-1)
    expected = -torch.cdist(unit, vq.codebook().detach()) ** 2
    torch.testing.assert_close(vq.affinity(z).detach(), expected, atol=1e-5, rtol=1e-5)


def test_usage_and_perplexity_closed_forms():
    assert codebook_usage(torch.tensor([0, 1, 1, 3]), 8) == 0.375
    assert perplexity(torch.arange(16), 16) == pytest.approx(16.0)
    assert perplexity(torch.zeros(10, dtype=torch.long), 16) == pytest.approx(1.0)
    assert perplexity(torch.tensor([0, 0, 1, 1]), 4) == pytest.approx(2.0)
    assert math.isfinite(perplexity(torch.tensor([2]), 3))


@pytest.mark.parametrize(("build", "error", "match"), [
    (lambda: ScalarQuantizer(3, 1), ValueError, "num_values must be an integer ≥ 2"),
    (lambda: ScalarQuantizer(0, 4), ValueError, "num_latents"),
    (lambda: ScalarQuantizer(2, 4, low=1.0, high=0.0), ValueError, "low"),
    (lambda: ScalarQuantizer(3)(torch.zeros(2, 4)), ValueError, "num_latents = 3"),
    (lambda: ScalarQuantizer(3)(torch.full((2, 3), math.nan)), ValueError, "NaN"),
    (lambda: ScalarQuantizer(3)(torch.zeros(2, 3, dtype=torch.long)), TypeError, "floating"),
    (lambda: VectorQuantizer(1, 4), ValueError, "num_codes"),
    (lambda: VectorQuantizer(8, 4, estimator="gumbel"), ValueError, "estimator"),
    (lambda: VectorQuantizer(8, 4, beta=-1.0), ValueError, "beta"),
    (lambda: VectorQuantizer(8, 4, metric="l1"), ValueError, "metric"),
    (lambda: VectorQuantizer(8, 4)(torch.zeros(2, 5)), ValueError, "dim = 4"),
    (lambda: codebook_usage(torch.tensor([], dtype=torch.long), 4), ValueError, "empty"),
])
def test_bad_input(build, error, match):
    with pytest.raises(error, match=match):
        build()
