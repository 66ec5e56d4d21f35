r"""QuantNAS: quantisation-aware search for super-resolution against quantisation noise.

Shvetsov, Osin, Zaytsev, Koryakovskiy, Buchnev, Trofimov, Burnaev. "QuantNAS for super
resolution: searching for efficient quantization-friendly architectures against quantization
noise", 2022 (IEEE Access 2024), arXiv 2208.14839; official code On-Point-RND/QuantNAS
(``search_sr.py``, ``sr_models/quant_conv_lsq.py``, ``quant_ops.py``, ``ADN.py``), read at a74390e.

The method in three lines: a DARTS supernet whose every layer mixes operations × bit-widths
(weights shared across bit-widths) is searched with additive quantisation noise of each
bit-width's magnitude in place of fake quantisation (smooth, one convolution per op); an entropy
regulariser on the architecture probabilities, ramped in after a warm-up, drives each layer to
one (op, bit) so the argmax network matches the supernet, and a normalised BitOps penalty trades
quality for cost; the argmax network is retrained from scratch with LSQ.

Equations (symbols: α_l the logits of searched layer l, p_l = softmax(α_l) over its |O|·|B|
(op, bit) pairs, a_b = p_l(o, b) for one op o, W its weight, X the layer input, e the epoch):

* quantisation noise (paper, section "Quantization noise"):
  Δ_b(t) = sg((max t − min t)/(2^b − 1)) · ε/2, ε ~ N(0, I) (uniform variant: U(−½, ½)
  without /2); std (max − min)/(2^b − 1)/2;
* noisy mixture (official ``QuaNoiseConv2d``, :class:`~.ops.MixedQuantOp`): a_fp = 1/(|B|+1),
  a'_b = a_b/(Σ_b a_b + a_fp), W̃ = a_fp W + Σ_b a'_b (W + Δ_b(W)), X̃ likewise on ReLU(X),
  y_o = conv(X̃, W̃)·Σ_b a_b, layer output Σ_o y_o;
* α loss (paper, section "Entropy regularization"; official ``SparseCrit``, ``FlopsLoss``):
  L_α = L1(ŷ, y) + c·w₁(e)·w₂(e)·Σ_l H(p_l) + λ_hw·BitOps(p)/BitOps(p at the start),
  BitOps(p) = Σ_l Σ_{o,b} p_l(o, b)·FLOPs(o)·b, FLOPs = 2·MACs;
  w₁ = (e − e_wu)/(E − 1 − e_wu), q = ⌊(E − e_wu)/4⌋, w₂ = 0 if e − e_wu < q else
  log_{E−q−e_wu+1}(e − q − e_wu + 2) (:func:`~.search.entropy_schedule`);
* ADQ (paper, section "Adaptive Deviation for Quantization"; official ``ADN.py``):
  out = f(BN(x))·φ(std(s)) + s, std over (C, H, W) per sample, φ a 1×1 conv (w 1.5, b 0);
* search (first-order DARTS, official ``train``): per batch pair, from epoch e_wu on, one Adam
  step of α on the α split, then one Adam step of W on L1 over the weight split (grad-norm clip
  5, cosine); genotype = argmax_{(o,b)} p_l per layer; the final net is trained from scratch
  with LSQ weights and HWGQ activations at the chosen bits; final BitOps = Σ MACs·b².

Defaults and sources: E = 20, e_wu = 9, c = 1e-3, batch 32, W: Adam lr 1e-3 wd 3e-8 clip 5
cosine; α: Adam lr 3e-4 betas (0.5, 0.999) wd 0; weight/α splits 35 % each; bits [4, 8];
retraining 30 epochs Adam lr 1e-4 cosine (official configs and ``search_sr.py``); Gaussian noise
(official ``quant_noise``); λ_hw swept (README: {0, 5e-5, 1e-4, 1e-3}). The supernet here is
the spec's CPU search space (§5: head conv, 2 residual cells × 2 searched layers, a searched
upsampling layer, ops conv1×1/3×3/5×5/grouped-2 conv3×3), not the official RFDN-like body with
ESA blocks; the head stays a fixed 8-bit LSQ conv as in the official code.

Cost relative to a plain supernet step: noise mode adds per op and bit one min/max reduction
and one random draw of the weight's and of the input's size (element-wise), and keeps one
convolution per op; the direct ``per_bit`` form runs |B| convolutions per op. Each search step
is two forward/backward passes (α step, then W step), as in first-order DARTS.

Departures from the official code, and why:

* ``detach_noisy=False`` by default: the paper's equation lets W and X receive gradient through
  every noisy term (the noise itself is a constant); the official ``quant_noise`` returns
  ``(t + Δ).detach()``, so W gets gradient only through the a_fp share — ``detach_noisy=True``;
* LSQ step sizes are trained (the official search keeps its quantisers in a plain list, so the
  steps are never registered or trained: ``train_steps=False`` reproduces that);
* the genotype is the argmax of the last epoch's α with ties to the lower index (the official
  parser picks op 0 / bit 0 when every α ≤ 0); the official "best" file is overwritten every
  epoch, so it is the last epoch's too;
* BitOps in the search is Σ p·FLOPs·b (official, linear in b) and in the final network MACs·b²
  (official ``QAConv2d``: FLOPs·b²/2); the noise mixture's coefficients on W sum to more than 1
  for a one-hot p (1.083 with two bit-widths), as in the official code;
* no DDP: the search runs in one process (``fit(distribute=False)``).
"""

from regzoo.methods.quantnas.networks import (
    DEFAULT_OPS,
    HEAD_BITS,
    QuantNASNet,
    QuantNASSuperNet,
)
from regzoo.methods.quantnas.ops import ADQ, PRIMITIVES, MixedQuantOp, QuantConv, conv_macs
from regzoo.methods.quantnas.quantizers import (
    LSQQuantizer,
    hwgq,
    quantization_noise,
    round_pass,
)
from regzoo.methods.quantnas.search import (
    QuantNASConfig,
    QuantNASResult,
    RetrainConfig,
    arch_entropy,
    entropy_schedule,
    fit_quantnas,
    mean_max_probability,
    super_resolution_psnr,
    train_quantized,
)

__all__ = [
    "ADQ",
    "DEFAULT_OPS",
    "HEAD_BITS",
    "PRIMITIVES",
    "LSQQuantizer",
    "MixedQuantOp",
    "QuantConv",
    "QuantNASConfig",
    "QuantNASNet",
    "QuantNASResult",
    "QuantNASSuperNet",
    "RetrainConfig",
    "arch_entropy",
    "conv_macs",
    "entropy_schedule",
    "fit_quantnas",
    "hwgq",
    "mean_max_probability",
    "quantization_noise",
    "round_pass",
    "super_resolution_psnr",
    "train_quantized",
]
