r"""GIFD: gradient inversion over a generator's feature domains (Fang et al., ICCV 2023).

Paper: "GIFD: A Generative Gradient Inversion Method with Feature Domain Optimization", Hao
Fang, Bin Chen et al., ICCV 2023, arXiv 2308.04699. Official code:
https://github.com/ffhibnese/GIFD_Gradient_Inversion_Attack (read at commit ff243fe).

**Dual use.** This is an attack: it reconstructs a federated-learning client's private images
from the gradient the client shares. It is here to measure how much a shared gradient leaks and
how well defences (gradient noise, larger batches) hold, as the paper does; use it only on
models and data you are entitled to probe.

The method in three lines: recover a client's batch x* from its shared gradient g* by searching
a pretrained generator's input so that the attacked model's gradient at the generated batch
points the same way as g*; instead of searching the latent alone (GIAS, GGL), search it first,
then each intermediate feature in turn inside an l1 ball around the previous solution, and
return the stage whose image matches the gradient best.

Equations (paper §3, Fig. 2, and the official ``inversefed/reconstruction_algorithms.py``; the
paper's own equation numbers are not cited: its text was not available offline). The attacked
model f_w (parameters w_i), the observed gradient g* = ∇_w CE(f_w(x*), y*) of the mean
cross-entropy over a batch of B images, the generator G = G_L ∘ … ∘ G_1 split into stages
(G_1 takes the latent z, G_L returns the image in the valid range):

* labels y = the B most negative row sums of the last linear layer's gradient (iDLG; official
  ``infer_label``), or given;
* gradient loss, one cosine over all parameters (official ``cost_fn='sim_cmpr0'``):
  L_grad(x) = 1 − Σ_i⟨g_i(x), g*_i⟩ / (√Σ_i‖g_i(x)‖² · √Σ_i‖g*_i‖²), g(x) = ∇_w CE(f_w(x), y);
* objective J(x) = L_grad(x) + λ_TV·TV(x) + λ_n·‖x‖₂/(HW), TV(x) = mean|∂_h x| + mean|∂_v x|,
  λ_TV = 1e-4, λ_n = 1e-6;
* stage 0: z ← argmin J(G(z)) from z ~ N(0, I), z projected after each step onto the sphere
  of its starting norm;
* stage k = 1 … K−1: h_k starts at the previous solution pushed one stage forward,
  a_k = G_k(h_{k−1}); h_k ← argmin J(G_{k+1..L}(h_k)) subject to ‖h_k − a_k‖₁ ≤ r_k, enforced
  after each step by the Euclidean projection onto the l1 ball (Duchi et al. 2008), per sample;
* each stage: Adam, ``steps`` steps at lr(t) = lr·ramp(t), t = step/steps (official
  ``get_lr``; 0 at t = 0); R restarts; the images are clamped to the valid range and each
  restart is scored by L_grad; the stage keeps its best restart;
* output: the image of the stage with the lowest score, k* = argmin_k L_grad.

Defaults and sources: steps 1000 per stage, lr 0.1 (official ``configs_biggan.yml``
``steps``, ``lr_io``); 4 restarts, TV 1e-4, image norm 1e-6 (official configs); K = every
stage of the generator (official ``end_layer``); latent fixed after stage 0 and spherical
projection of the latent (official BigGAN branch; the paper's Fig. 2 optimises the latent,
then each intermediate feature in turn); radii relative, ρ = 0.1 of ‖a_k‖₁ per sample
(regzoo: below).

Cost: a step costs one generator forward from the searched stage, a double backward through the
attacked model (its gradient, then the gradient of L_grad with respect to the image: ≈ 3–4 ×
a plain forward/backward), one Adam step and one O(n log n) projection per sample; the same as
pixel-space and latent-only inversion per step. All restarts (and, with
:meth:`GIFDAttack.invert_many`, all attacks) run as one vectorised computation
(``torch.func.vmap``).

What differs from the official code, and why:

* **Radii are relative** (``radius_mode="relative"``: r_k = ρ_k·‖a_k‖₁ per sample). The official
  radii (1000 … 8000) are absolute l1 units tuned to StyleGAN2/BigGAN feature sizes and mean
  nothing for another generator; ``radius_mode="absolute"`` takes l1 units as they do.
* **Whether z stays free after stage 0** differs between their two generators: the BigGAN
  branch searches h_k only, the StyleGAN2 branch also trains z (and the noise inputs), each
  l1-projected around its stage-start value and z kept on its sphere. Default: fixed
  (``latent_free=False``). With ``latent_free=True`` z is trained too; in a generator whose
  later layers do not read z (a DCGAN), z reaches the image through the earlier stages, so the
  stage-k feature is parameterised as h_k = G_k(…G_2(G_1(z) + δ_1)…) + δ_k with the earlier
  offsets δ kept, z in the stage's l1 ball around its stage-start value. StyleGAN2's noise
  inputs (the first 5 + 2k train at stage k), its W+ latent (LeakyReLU₀.₂(σ·z + μ) of a fitted
  Gaussian) and its to_rgb skip sum restarting at the optimised layer have no DCGAN analogue;
  for a DCGAN the latent is z itself.
* **The best restart's image**: the official ``choose_optimal`` returns the *last* restart's
  image with the *best* restart's score, and drops non-finite scores before its argmin, which
  shifts the index; here the best finite restart's image is returned (a code bug, not a
  choice). A stage where every restart of an attack is non-finite raises FloatingPointError.
* **The scored image** is rendered from the variables after the stage's last step (the
  official scores the image rendered before it; the ramp makes that last step ≈ 0 anyway).
* **The spherical projection** is per sample; the official BigGAN call normalises the whole
  (B × 128) latent batch jointly (an empty dimension tuple in its norm), the same at B = 1.
* **Batches**: trials run vectorised; the official loops over restarts.
* The attacked model is any ``nn.Module`` (eval mode when it has batch norm or dropout; the
  official uses a seeded, untrained ResNet-18 in eval mode); the image-norm term divides by
  H·W (the official's nominal side², the same for square images).

Baselines in the same harness: :class:`PixelInversion` (Geiping et al. 2020: the image itself,
from N(0, I), clamped after each step; their step decay is replaced by the harness's ramp) and
``GIFDAttack(..., config=GIFDConfig(num_stages=1))`` (the latent alone).

Public API: :class:`GIFDAttack`, :class:`GIFDConfig`, :class:`PixelInversion`,
:class:`PixelInversionConfig`, :class:`GIFDResult`; the pieces :func:`cosine_gradient_loss`,
:func:`infer_labels`, :func:`project_l1_ball`, :func:`lr_ramp`.
"""

from regzoo.methods.gifd.attack import GIFDAttack, GIFDConfig, PixelInversion, PixelInversionConfig
from regzoo.methods.gifd.ops import cosine_gradient_loss, infer_labels, lr_ramp, project_l1_ball
from regzoo.methods.gifd.search import GIFDResult

__all__ = [
    "GIFDAttack",
    "GIFDConfig",
    "GIFDResult",
    "PixelInversion",
    "PixelInversionConfig",
    "cosine_gradient_loss",
    "infer_labels",
    "lr_ramp",
    "project_l1_ball",
]
