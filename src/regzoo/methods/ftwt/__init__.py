r"""Fire Together Wire Together (FTWT): dynamic channel pruning, self-supervised mask prediction.

Elkerdawy, Elhoushi, Zhang, Ray. "Fire Together Wire Together: A Dynamic Pruning Approach with
Self-Supervised Mask Prediction", CVPR 2022, arXiv 2110.08232. Official code:
github.com/selkerdawy/FTWT (no licence file: read, not reused).

Before each Conv–BN–ReLU block a tiny predictor looks at the block's input and decides, per
input, which output filters to compute; the filters it switches off are zeroed (at inference they
need not be computed). The predictor is a binary classifier trained on labels read from the
block's own activations (the filters that carry the top fraction of the "heatmap mass"), so the
pruning loss is decoupled from the task loss and one threshold τ sets the FLOPs budget.

Ground truth (the paper's heatmap-mass criterion, official ``utils/layers.py``). For a block with
input x and output o = ReLU(BN(conv(x))) of C filters, per example, the filter score is a_k =
max_{spatial} |o_k| and its share â_k = a_k / Σ_j a_j. Mass rule (``gt_type="mass"``, threshold τ ∈
(0, 1]): sort â descending, S_k the cumulative share of the k largest; filter k is kept when

.. math::

    S_k - \tau \le \delta \quad (\tau < 1), \qquad \hat a_k > \delta \quad (\tau = 1),
    \qquad \delta = 10^{-5},

so the filter whose share crosses τ is dropped (``crossing="drop"``: the official
``get_gt_mask_ratio``, the default); ``crossing="keep"`` keeps it too (keep k
when S_{k-1} < τ − δ: the smallest prefix reaching τ, the rule a prototype here used). τ = 1 drops
only the dead filters of that input. A block whose scores are all zero keeps nothing. Uniform
rule (``gt_type="uniform"``, official ``get_gt_mask_pratio``; τ is then the fraction *dropped*,
per the code's ``mthresh``): drop the ⌊τ·C⌋ lowest-scoring filters and every dead one
(a_k ≤ δ).

Predictor (official ``MaskPredictorNN``): adaptive average pool of x to d×…×d (``pool`` = d,
default 1: the official ``embedding=-1``), flattened to C_in·d^n, an optional softmax over that
vector (``softmax=True``: the official ``--softmax 1``), then a 1×1 convolution with bias
(= a linear layer) to C logits ℓ. Mask b_k = 1[σ(ℓ_k) > ½] = 1[ℓ_k > 0], hard in the forward
pass in training and at inference; the block returns o ⊙ b.

Mask loss (official ``compute_mask_loss_per_input``): per block the binary cross-entropy with
logits of ℓ against the ground truth m*, averaged over the batch and summed over filters; the
mean over blocks, times w (``mask_weight`` = 1), is :meth:`FTWT.penalty`:

.. math::

    \mathcal L = \mathrm{CE}(f(x), y) + w \cdot \frac{1}{L}\sum_{\ell=1}^{L}\sum_{k=1}^{C_\ell}
        \frac{1}{B}\sum_{i=1}^{B}\mathrm{BCE}(\ell_{\ell,k}(x_i), m^*_{\ell,k}(x_i)),

with w dropped to 0 from epoch ⌊cooldown·epochs⌋ on (``cooldown`` = 0.5, :meth:`FTWT.set_epoch`).
Modes: ``"decoupled"`` (default) feeds the predictor x.detach(), so the mask loss reaches only
the predictors; ``"joint"`` feeds x, so the mask loss also shapes the earlier layers. The hard
mask has no gradient, so the task loss never reaches the predictors in either mode.

FLOPs (multiply–accumulates, :meth:`FTWT.macs`): a convolution with kernel volume K, P output
positions and G groups costs Σ_g (active outputs in group g) × (active inputs in group g) × K × P,
where the active inputs are the previous masked block's kept filters (a Linear layer is K = P =
1, its inputs repeated over the flattened positions), plus each predictor's C_in·d^n × C multiply
-accumulates. ``counting="official"`` reproduces the paper's counter: masked convolutions only
in the numerator, active outputs × ⌊active inputs / G⌋ × K × P (a depthwise conv counts 0
whenever any input is off), the dense network's convolutions and Linear layers in the
denominator, predictors not counted. Counted FLOPs are not realised: the masked filters are still
computed (dense conv × mask); a speed-up needs gather/scatter kernels.

Defaults and sources: τ = 0.9 (README runs use 0.80–1.00; the reproduction sweeps it); mode
decoupled, mass ground truth, crossing dropped, pool 1, softmax on, mask weight 1, cool-down 0.5
(paper's training setup, official ``cifar.py`` and ``job_dynamic.sh``); predictor SGD lr 0.1,
momentum 0.9, no weight decay (:meth:`FTWT.predictor_optimizer`; official ``--mlr`` and its SGD);
backbone SGD lr 1e-2, momentum 0.9, weight decay 5e-4, step decay 0.1 at 40/61/75 % of training
(official ``cifar.py``, left to the caller's loop).

Cost: one pooling and one C_in·d^n × C linear map per block (≪ 1 % of a conv's FLOPs at CIFAR
size), plus the ground truth's sort over C filters per example per block (training and
evaluation); one forward and backward per step, as a plain step.

Departures from the official code, each an option:

* Predictor initialisation: the official default (``--headinit random``) is PyTorch's default
  layer init, so the first masks are random; the method's described recipe pre-trains the
  predictors to output "all on", which the code does only when ``headinit`` lacks "random"
  (≤ 500 batches of BCE against ones: :meth:`FTWT.pretrain_all_on`). The default here,
  ``predictor_init="dense"``, starts the predictors exactly all on (zero weights, bias 1) so that
  applying keeps the network's function, as every regzoo transform does; ``"random"`` is the
  official default.
* After the cool-down only the mask-loss weight drops to 0 (the code's lr reset is commented
  out), so with momentum the predictors keep drifting on decaying momentum: stepping
  :meth:`FTWT.predictor_optimizer` on a zero mask loss does the same.
* The official binariser is a straight-through function (forward {0, 1}, backward identity), but
  it runs under ``torch.no_grad`` and is dead code: masks are hard and carry no gradient (the
  default). ``straight_through=True`` makes it live (the task loss then reaches the predictors
  through σ(ℓ)); :func:`straight_through_binarize` is the function itself.
* The official counter's flaws (floored ⌊prev/G⌋; a residual block's conv1 input taken from the
  previous conv2's mask although the skip refills it; FC and downsample layers left out of the
  numerator only) are fixed by the default exact counter; ``counting="official"`` gives the
  paper's numbers' accounting for sequential networks.
* Blocks are found in ``nn.Sequential`` containers (Conv/Linear, optional BatchNorm, optional
  activation), like the official VGG/MobileNet wrappers; in a residual block, tuple targets
  ``(conv1, bn1, relu)`` and ``(conv2, bn2)`` give the official ResNet default (conv2 masked
  before the addition, its ground truth from |BN(conv2)|). The code's ``gtafterblock=True``
  (mask after the addition) is not offered: it needs the block's forward, not a layer. The MAC
  counter follows execution order, so it is exact for chains without skip connections only (on
  a residual network it repeats the official counter's refill error).

In a loop of your own:

>>> import torch
>>> import torch.nn.functional as F
>>> from regzoo.models.small import CNN
>>> model = CNN((8, 8), 10, channels=(8, 16))
>>> ftwt = FTWT.apply(model, threshold=0.9)
>>> predictors = ftwt.predictor_optimizer()
>>> x, y = torch.rand(4, 64), torch.randint(0, 10, (4,))
>>> loss = F.cross_entropy(model(x), y) + ftwt.penalty()
>>> loss.backward(); predictors.step()
>>> ftwt.keep_fractions()  # the predictors start all on: the dense network's outputs
[1.0, 1.0]
"""

from regzoo.methods.ftwt.flops import MacsCount
from regzoo.methods.ftwt.masks import (
    DELTA,
    BlockRecord,
    MaskedBlock,
    MaskPredictor,
    check_threshold,
    filter_scores,
    mass_ground_truth,
    straight_through_binarize,
    uniform_ground_truth,
)
from regzoo.methods.ftwt.transform import FTWT, apply_ftwt

__all__ = [
    "DELTA",
    "FTWT",
    "BlockRecord",
    "MacsCount",
    "MaskPredictor",
    "MaskedBlock",
    "apply_ftwt",
    "check_threshold",
    "filter_scores",
    "mass_ground_truth",
    "straight_through_binarize",
    "uniform_ground_truth",
]
