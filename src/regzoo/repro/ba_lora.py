"""BA-LoRA at CPU scale: inherited bias and noisy labels, vs PiSSA and LoRA, NLU and NLG.

The paper's robustness claim (v6: "quantitatively superior robustness and bias mitigation",
BA-LoRA > PiSSA > LoRA) needs a pretrained model with a *controlled* inherited bias. Both
settings below are our own operationalisation of "catastrophic inheritance" (spec ba_lora.md §5),
not the paper's benchmarks.

``nlu_digits`` (classifier). :func:`regzoo.data.transfer.digits_transfer` gives a source task
(digits) and a target task (the same images with permuted pixels, labels + 3 mod 10). Every input
gets 10 extra "watermark" features, a one-hot of a class w scaled by ``spurious_scale``. The
*dirty pretraining*: an MLP in-128-128-10 is trained (:func:`regzoo.repro.common.pretrain_mlp`:
Adam, ``pretrain_epochs`` epochs of batch ``batch_size``) on the source task with w = the digit
for ``pre_bias`` (90 %) of the images (else uniform) and ``pre_noise`` (20 %) symmetric label
noise, so it learns to lean on the watermark. The downstream task: the target task, its
training labels with ``down_noise`` (30 %) symmetric noise, the watermark still tied to the digit
for ``down_bias`` (50 %) of the images (the bias persists in new data, more weakly). Test images are
scored three ways: watermark as in training (``target_accuracy``), watermark = the digit
(aligned) and watermark ≠ the digit (conflicting; ``worst_group_accuracy`` = the smaller of the
two, always the conflicting one here); ``bias_gap`` = aligned − conflicting;
``noisy_input_accuracy`` with Gaussian pixel noise σ = ``input_noise``; ECE. Forgetting: source
test accuracy and loss (watermark uniform).

``nlg_toy`` (causal LM). :class:`regzoo.models.causal_lm.TinyCausalLM` (d 64, 2 layers) is
pretrained on :class:`regzoo.data.text_corpus.ToyGrammar` sentences "<bos> the ADJ SUBJ VERB the
ADJ OBJ ." under the pretraining rule with ``lm_pre_noise`` (20 %) random objects (AdamW, cosine
decay per step). Downstream: ``lm_down_sentences`` (120, about 3 per subject–verb pair)
sentences of the first ``shifted_verbs`` verbs under the *shifted* rule (their object offsets
moved), ``lm_down_noise`` (40 %) random objects; a noisy validation set of ``lm_val_sentences``
(200) sentences drawn the same way. Downstream accuracy = clean object accuracy on fresh test
sentences of those verbs; forgetting = next-token loss on a clean pretraining-rule corpus (all
verbs; ``source_loss``) and object accuracy on the verbs the downstream task never touches
(``source_accuracy``).

Arms: ``full_ft``; ``lora`` and ``pissa`` (rank 8, scale 1 — r = alpha as in the official
script); ``ba_lora`` (PiSSA + the three terms); ``ba_lora_cons``, ``ba_lora_div``,
``ba_lora_svd`` (one term each: the ablation); ``pissa_ba_lr`` (a control: PiSSA at the learning
rate BA-LoRA chose, so the regularisers are compared without the rate difference);
``ba_lora_residual`` (BA-LoRA with PiSSA's residual model W − s·B₀A₀ as the consistency teacher,
what the official scripts most likely load, at BA-LoRA's chosen rate and λ's). All: AdamW
(weight decay 0, as the official script), cosine decay per step, every linear layer adapted in
NLU, the q/k/v/o/up/down projections in NLG (embeddings and ``lm_head`` frozen, as the paper).
Arms map onto the fine-tuning kit's (:data:`regzoo.repro.finetune.ARMS`; :data:`ADAPTER`).

Both pretrained models are built once per machine on the CPU and cached as assets
(:mod:`regzoo.assets`: ``ba_lora_nlu_mlp``, ``ba_lora_nlg_lm``); fine-tuning runs on the unit's
device.

Hyperparameters, chosen once per run on validation data of a separate ``sweep_seed`` (its own
pretrained model and split; :func:`regzoo.repro.protocol.shared_once`), by the best *noisy*
validation accuracy (no clean labels and no group labels are used for the choice; each grid is
scored by :func:`regzoo.repro.finetune.score_grid`):

1. ``full_ft``, ``lora``, ``pissa``: the learning rate from the setting's grid;
2. each single-term arm: λ_i = paper λ_i × m, m from ``lambda_multipliers``, at PiSSA's rate (the
   paper's λ's are tiny next to CE at our scale; L_div grows with the logits' scale²);
3. ``ba_lora``: the three λ_i chosen in 2, its own rate from the grid.

Forgetting at matched accuracy: ``match_accuracy`` = 0.9 × the smallest clean validation accuracy
of LoRA, PiSSA and BA-LoRA at their chosen settings (from the sweep); ``source_at_match`` is a
unit's source metric (NLU: accuracy; NLG: loss) interpolated to where the downstream test accuracy
first reaches it along the epochs (:func:`regzoo.repro.finetune.source_at_matched_target`; NaN if
never).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo import assets
from regzoo.data.noise import symmetric_noise
from regzoo.data.text_corpus import Corpus, ToyGrammar, object_accuracy
from regzoo.data.transfer import Task, digits_transfer
from regzoo.methods.ba_lora import PAPER_WEIGHTS, BALoRA
from regzoo.metrics import expected_calibration_error
from regzoo.models.causal_lm import CausalLMConfig, TinyCausalLM, next_token_loss
from regzoo.repro.config import ReproConfig
from regzoo.repro.finetune import (
    Adapted,
    adapt,
    pretrained_mlp,
    score_grid,
    source_at_matched_target,
    warmup_cosine,
)
from regzoo.repro.protocol import (
    Claim,
    Reproduction,
    Unit,
    UnitEnv,
    UnitResult,
    shared_once,
    summary_mean,
)
from regzoo.train import seed_everything, time_steps
from regzoo.train.distributed import local_only

SETTINGS = ("nlu_digits", "nlg_toy")
ARMS = ("full_ft", "lora", "pissa", "ba_lora", "ba_lora_cons", "ba_lora_div", "ba_lora_svd",
        "pissa_ba_lr", "ba_lora_residual")
SINGLE_TERM = {"ba_lora_cons": 0, "ba_lora_div": 1, "ba_lora_svd": 2}
MATCHED_ARMS = ("lora", "pissa", "ba_lora")
ADAPTER = {"pissa_ba_lr": "pissa", "ba_lora_residual": "ba_lora",
           **dict.fromkeys(SINGLE_TERM, "ba_lora")}
"""Arms of this reproduction that are a kit arm (:data:`regzoo.repro.finetune.ARMS`) by another
name: the control is PiSSA, the ablations are BA-LoRA with two of the three λ's at 0, and the
residual-teacher arm is BA-LoRA with ``teacher="residual"``."""
TEACHER = {"ba_lora_residual": "residual"}
"""BA-LoRA's teacher per arm (:meth:`regzoo.methods.ba_lora.BALoRA.apply`); "pretrained" else."""


@dataclasses.dataclass(frozen=True)
class BALoRAReproConfig(ReproConfig):
    """Settings of the BA-LoRA reproduction; presets ``tiny``, ``quick`` and ``full``."""

    positive_fields = ("rank", "batch_size", "nlu_epochs", "nlg_epochs", "pretrain_epochs",
                       "lm_pretrain_epochs", "lm_pretrain_sentences", "lm_down_sentences",
                       "lm_val_sentences")

    settings: tuple[str, ...] = SETTINGS
    arms: tuple[str, ...] = ARMS
    rank: int = 8
    batch_size: int = 64
    sweep_seed: int = 1000
    lambda_multipliers: tuple[float, ...] = (1.0, 1e1, 1e2, 1e3, 1e4)
    # NLU (digits with a planted watermark)
    hidden: tuple[int, ...] = (128, 128)
    spurious_scale: float = 1.0
    pre_bias: float = 0.9
    pre_noise: float = 0.2
    down_bias: float = 0.5
    down_noise: float = 0.3
    input_noise: float = 0.3
    pretrain_epochs: int = 40
    pretrain_lr: float = 1e-3
    nlu_epochs: int = 30
    nlu_lr_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    # NLG (tiny causal LM on the toy grammar)
    lm_d_model: int = 64
    lm_layers: int = 2
    lm_pretrain_sentences: int = 3000
    lm_pre_noise: float = 0.2
    lm_pretrain_epochs: int = 20
    lm_pretrain_lr: float = 3e-3
    lm_down_sentences: int = 120
    lm_down_noise: float = 0.4
    lm_val_sentences: int = 200
    nlg_epochs: int = 25
    nlg_batch_size: int = 32
    nlg_lr_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2)

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {self.arms}")
        if "ba_lora" not in self.arms or "pissa" not in self.arms:
            raise ValueError("arms must include 'ba_lora' and 'pissa', the two sides of the claim")
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown or not self.settings:
            raise ValueError(f"settings must be a non-empty subset of {SETTINGS}, got "
                             f"{self.settings}")
        for name in ("nlu_lr_grid", "nlg_lr_grid", "lambda_multipliers"):
            grid = getattr(self, name)
            if not grid or any(v <= 0 for v in grid) or list(grid) != sorted(set(grid)):
                raise ValueError(f"{name} must be increasing positive values, got {grid}")
        for name in ("pre_bias", "pre_noise", "down_bias", "down_noise", "lm_pre_noise",
                     "lm_down_noise"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.sweep_seed in self.seeds:
            raise ValueError(f"sweep_seed={self.sweep_seed} is one of the seeds; hyperparameters "
                             "must be chosen on a separate seed")

    @classmethod
    def tiny(cls) -> BALoRAReproConfig:
        return cls(seeds=(0,), arms=("pissa", "ba_lora", "ba_lora_cons", "ba_lora_residual"),
                   hidden=(16,),
                   lambda_multipliers=(1.0,), pretrain_epochs=1, nlu_epochs=2,
                   nlu_lr_grid=(3e-3,), lm_d_model=16, lm_layers=1, lm_pretrain_sentences=64,
                   lm_pretrain_epochs=1, lm_down_sentences=32, nlg_epochs=2,
                   nlg_lr_grid=(3e-3,))

    @classmethod
    def quick(cls) -> BALoRAReproConfig:
        return cls(seeds=(0, 1, 2), settings=("nlu_digits",),
                   arms=("lora", "pissa", "ba_lora", "pissa_ba_lr"),
                   lambda_multipliers=(1.0, 1e2, 1e4))

    @classmethod
    def full(cls) -> BALoRAReproConfig:
        return cls(seeds=(0, 1, 2, 3, 4))  # the fewest seeds that give a verdict


# --- training helpers ------------------------------------------------------------------------

def _adamw_cosine(parameters: Sequence[nn.Parameter], lr: float, total_steps: int
                  ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (weight decay 0, as the official script) with cosine decay over the steps."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    return optimizer, warmup_cosine(optimizer, total_steps)


def _moved(value: Any, device: torch.device | str | None) -> Any:
    """``value`` with every tensor in it (tuples, dicts, corpora, the data classes) on ``device``.

    The data are drawn on the CPU, so a seed means the same data on any device.
    """
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_moved(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    if isinstance(value, (Corpus, NLUData, NLGData)):
        return dataclasses.replace(value, **{f.name: _moved(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value)})
    return value


def _train(adapted: Adapted, optimizer: torch.optim.Optimizer, scheduler: Any, n: int,
           batch_loss: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
           evaluate: Callable[[], dict[str, float]], *, epochs: int, batch_size: int, seed: int,
           curves_every_epoch: bool, log: Callable[[dict[str, float]], None] | None
           ) -> dict[str, list[float]]:
    """Epochs of shuffled minibatches; BA-LoRA's terms join the task loss for its arms.

    ``batch_loss(indices)`` returns (logits, task loss, inputs); ``evaluate()`` runs after every
    epoch (or only the last unless ``curves_every_epoch``) and its records form the curves. The
    batch order comes from a CPU generator, so a seed means the same order on any device.
    """
    order = torch.Generator().manual_seed(seed)
    handle = adapted.handle if isinstance(adapted.handle, BALoRA) else None
    curves: dict[str, list[float]] = {}
    for epoch in range(epochs):
        for batch in torch.randperm(n, generator=order).split(batch_size):
            logits, loss, inputs = batch_loss(batch)
            if handle is not None:
                loss = loss + handle.regularizer(logits, inputs=inputs).total
            adapted.update(optimizer, loss, scheduler=scheduler)
        if not curves_every_epoch and epoch + 1 < epochs:
            continue
        record = evaluate()
        for name, value in record.items():
            curves.setdefault(name, []).append(value)
        if log is not None:
            log(record)
    return curves


def adapt_arm(arm: str, model: nn.Module, *, rank: int, task: str,
              weights: tuple[float, float, float], targets: Sequence[str] | None,
              device: torch.device | str | None = None) -> Adapted:
    """Wrap ``model`` in place for ``arm`` (on the CPU), then move it to ``device``."""
    return adapt(model, ADAPTER.get(arm, arm), device=device, target_modules=targets,
                 rank=rank, task=task, weights=weights, teacher=TEACHER.get(arm, "pretrained"))


def arm_weights(arm: str, chosen: dict[str, float]) -> tuple[float, float, float]:
    """(λ1, λ2, λ3) of a BA-LoRA arm given the per-term multipliers chosen in the sweep."""
    if arm in SINGLE_TERM:
        i = SINGLE_TERM[arm]
        return tuple(PAPER_WEIGHTS[j] * chosen[arm] if j == i else 0.0  # type: ignore[return-value]
                     for j in range(3))
    return tuple(PAPER_WEIGHTS[j] * chosen[name]  # type: ignore[return-value]
                 for j, name in enumerate(SINGLE_TERM))


# --- NLU: digits with a planted watermark ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NLUData:
    """Watermarked inputs of both tasks; ``digit_*`` is the underlying digit of each image."""

    source_train: tuple[torch.Tensor, torch.Tensor]
    source_test: tuple[torch.Tensor, torch.Tensor]
    target_train: tuple[torch.Tensor, torch.Tensor]
    target_val: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    target_test: dict[str, tuple[torch.Tensor, torch.Tensor]]
    target_test_pixels_noisy: tuple[torch.Tensor, torch.Tensor]
    num_features: int


def _watermark(digits: torch.Tensor, bias: float, scale: float, g: torch.Generator,
               mode: str = "mix") -> torch.Tensor:
    """One-hot watermark per image (times ``scale``).

    The digit with probability ``bias`` (``mix``), always (``aligned``) or never
    (``conflicting``: a uniform other class).
    """
    n = digits.shape[0]
    other = (digits + torch.randint(1, 10, (n,), generator=g)) % 10
    if mode == "aligned":
        w = digits
    elif mode == "conflicting":
        w = other
    else:
        w = torch.where(torch.rand(n, generator=g) < bias, digits,
                        torch.randint(0, 10, (n,), generator=g))
    return F.one_hot(w, 10).float() * scale


@functools.lru_cache(maxsize=4)
def nlu_data(config: BALoRAReproConfig, seed: int) -> NLUData:
    """The seed's watermarked source and target tasks (labels noisy where the config says)."""
    pair = digits_transfer(seed)
    src, tgt, shift = pair.source, pair.target, pair.label_shift
    g = torch.Generator().manual_seed(seed + 7)
    s = config.spurious_scale

    def mark(x: torch.Tensor, digits: torch.Tensor, bias: float, mode: str = "mix"
             ) -> torch.Tensor:
        return torch.cat([x, _watermark(digits, bias, s, g, mode)], dim=1)

    y_src = symmetric_noise(src.y_train, config.pre_noise, 10, seed=seed).labels
    y_tgt = symmetric_noise(tgt.y_train, config.down_noise, 10, seed=seed + 1).labels
    y_val = symmetric_noise(tgt.y_val, config.down_noise, 10, seed=seed + 2).labels
    digit_test = (tgt.y_test - shift) % 10
    noise = torch.randn(tgt.x_test.shape, generator=g) * config.input_noise
    return NLUData(
        source_train=(mark(src.x_train, src.y_train, config.pre_bias), y_src),
        source_test=(mark(src.x_test, src.y_test, 0.0), src.y_test),
        target_train=(mark(tgt.x_train, (tgt.y_train - shift) % 10, config.down_bias), y_tgt),
        target_val=(mark(tgt.x_val, (tgt.y_val - shift) % 10, config.down_bias), y_val,
                    tgt.y_val),
        target_test={mode: (mark(tgt.x_test, digit_test, config.down_bias, mode), tgt.y_test)
                     for mode in ("mix", "aligned", "conflicting")},
        target_test_pixels_noisy=(mark(tgt.x_test + noise, digit_test, 0.0, "conflicting"),
                                  tgt.y_test),
        num_features=src.num_features + 10,
    )


NLU_TASK_FIELDS = ("spurious_scale", "pre_bias", "pre_noise")
"""The config fields the NLU source task depends on (with the seed): part of its asset's key."""


def nlu_source_task(config: BALoRAReproConfig, seed: int) -> Task:
    """The watermarked source task with noisy training labels; a uniform watermark in test.

    It has no validation split: the pretraining uses none.
    """
    data = nlu_data(config, seed)
    (x, y), (x_test, y_test) = data.source_train, data.source_test
    return Task("digits_watermarked", x, y, x[:0], y[:0], x_test, y_test, num_classes=10)


def nlu_pretrained(config: BALoRAReproConfig, seed: int) -> tuple[nn.Module, dict[str, float]]:
    """The dirty-pretrained MLP of ``seed`` (CPU, from the asset cache), source accuracies.

    The accuracies are on the source test split with a uniform and with an aligned watermark.
    """
    model, _ = pretrained_mlp(seed, hidden=config.hidden, epochs=config.pretrain_epochs,
                              lr=config.pretrain_lr, batch_size=config.batch_size,
                              task=lambda: nlu_source_task(config, seed),
                              task_name="ba_lora_nlu_mlp",
                              task_config={f: getattr(config, f) for f in NLU_TASK_FIELDS})
    xs, ys = nlu_data(config, seed).source_test
    aligned = xs.clone()
    aligned[:, -10:] = F.one_hot(ys, 10).float() * config.spurious_scale
    with torch.no_grad():
        return model, {"source_accuracy": _acc(model(xs), ys),
                       "source_aligned_accuracy": _acc(model(aligned), ys)}


def _acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).double().mean())


def train_nlu(config: BALoRAReproConfig, arm: str, seed: int, *, lr: float,
              weights: tuple[float, float, float], log: Callable[[dict[str, float]], None]
              | None = None, curves_every_epoch: bool = True,
              device: torch.device | str | None = None) -> dict[str, Any]:
    """Adapt the seed's pretrained MLP for ``arm`` on ``device``; curves and final metrics."""
    data = _moved(nlu_data(config, seed), device)
    model, info = nlu_pretrained(config, seed)
    seed_everything(seed)
    adapted = adapt_arm(arm, model, rank=config.rank, task="nlu", weights=weights,
                        targets=None, device=device)
    model.train()
    x, y = data.target_train
    steps_per_epoch = math.ceil(x.shape[0] / config.batch_size)
    optimizer, scheduler = _adamw_cosine(adapted.parameters, lr,
                                         config.nlu_epochs * steps_per_epoch)

    def evaluate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            out = {name: _acc(model(xt), yt) for name, (xt, yt) in
                   (("target_accuracy", data.target_test["mix"]),
                    ("aligned_accuracy", data.target_test["aligned"]),
                    ("worst_group_accuracy", data.target_test["conflicting"]))}
            xs, ys = data.source_test
            source_logits = model(xs)
            out["source_accuracy"] = _acc(source_logits, ys)
            out["source_loss"] = float(F.cross_entropy(source_logits, ys))
            xv, yv, yv_clean = data.target_val
            val_logits = model(xv)
            out["val_accuracy"] = _acc(val_logits, yv)
            out["clean_val_accuracy"] = _acc(val_logits, yv_clean)
        model.train()
        return out

    def batch_loss(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = batch.to(x.device)
        logits = model(x[batch])
        return logits, F.cross_entropy(logits, y[batch]), x[batch]

    curves = _train(adapted, optimizer, scheduler, x.shape[0], batch_loss, evaluate,
                    epochs=config.nlu_epochs, batch_size=config.batch_size, seed=seed,
                    curves_every_epoch=curves_every_epoch, log=log)
    model.eval()
    with torch.no_grad():
        xt, yt = data.target_test["mix"]
        final = {name: values[-1] for name, values in curves.items()}
        final["bias_gap"] = final["aligned_accuracy"] - final["worst_group_accuracy"]
        final["noisy_input_accuracy"] = _acc(model(data.target_test_pixels_noisy[0]),
                                             data.target_test_pixels_noisy[1])
        final["target_ece"] = expected_calibration_error(model(xt), yt)
        final["pretrained_source_accuracy"] = info["source_accuracy"]
        final["pretrained_source_aligned_accuracy"] = info["source_aligned_accuracy"]
    return {"final": final, "curves": curves}


# --- NLG: tiny causal LM on the toy grammar --------------------------------------------------

def _grammar(seed: int) -> ToyGrammar:
    return ToyGrammar(n_nouns=12, n_verbs=6, n_adjectives=8, shifted_verbs=3, shift=5,
                      seed=seed)


def _lm(config: BALoRAReproConfig, grammar: ToyGrammar) -> TinyCausalLM:
    return TinyCausalLM(CausalLMConfig(vocab_size=grammar.vocab_size, max_len=grammar.length,
                                       d_model=config.lm_d_model, n_layers=config.lm_layers,
                                       n_heads=4, d_ff=2 * config.lm_d_model))


@dataclasses.dataclass(frozen=True)
class NLGData:
    """The seed's grammar and corpora (pretraining, downstream splits, forgetting probes)."""

    grammar: ToyGrammar
    pretrain: Corpus
    down_train: Corpus
    down_val: Corpus
    down_test: Corpus
    source_test: Corpus
    retained_test: Corpus


@functools.lru_cache(maxsize=4)
def nlg_data(config: BALoRAReproConfig, seed: int) -> NLGData:
    """The seed's corpora (every draw from its own sub-seed)."""
    grammar = _grammar(seed)
    shifted = torch.arange(grammar.shifted_verbs)
    untouched = torch.arange(grammar.shifted_verbs, grammar.n_verbs)
    base = 10_000 * (seed + 1)
    n_down = config.lm_down_sentences
    return NLGData(
        grammar=grammar,
        pretrain=grammar.sample(config.lm_pretrain_sentences, noise=config.lm_pre_noise,
                                seed=base),
        down_train=grammar.sample(n_down, rule="shifted", noise=config.lm_down_noise,
                                  seed=base + 1, verbs=shifted),
        down_val=grammar.sample(config.lm_val_sentences, rule="shifted",
                                noise=config.lm_down_noise, seed=base + 2, verbs=shifted),
        down_test=grammar.sample(500, rule="shifted", seed=base + 3, verbs=shifted),
        source_test=grammar.sample(500, seed=base + 4),
        retained_test=grammar.sample(500, seed=base + 5, verbs=untouched),
    )


NLG_PRETRAIN_FIELDS = ("lm_d_model", "lm_layers", "lm_pretrain_sentences", "lm_pre_noise",
                       "lm_pretrain_epochs", "lm_pretrain_lr", "batch_size")
"""The config fields the pretrained LM depends on (with the seed): part of its asset's key."""


def nlg_pretrained(config: BALoRAReproConfig, seed: int
                   ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The seed's LM pretrained on the noisy corpus: state dict, source loss and accuracy.

    Trained on the CPU and cached as an asset (:mod:`regzoo.assets`).
    """
    data = nlg_data(config, seed)

    def build() -> dict[str, Any]:
        seed_everything(seed)
        model = _lm(config, data.grammar)
        tokens = data.pretrain.tokens
        optimizer, scheduler = _adamw_cosine(
            list(model.parameters()), config.lm_pretrain_lr,
            config.lm_pretrain_epochs * math.ceil(tokens.shape[0] / config.batch_size))
        g = torch.Generator().manual_seed(seed)
        for _ in range(config.lm_pretrain_epochs):
            for batch in torch.randperm(tokens.shape[0], generator=g).split(config.batch_size):
                optimizer.zero_grad()
                next_token_loss(model(tokens[batch]), tokens[batch]).backward()
                optimizer.step()
                scheduler.step()
        with torch.no_grad():
            return {"state_dict": model.state_dict(), **_nlg_source_metrics(model, data)}

    payload = assets.cached(
        "ba_lora_nlg_lm", {"seed": seed, **{f: getattr(config, f) for f in NLG_PRETRAIN_FIELDS}},
        build, check=lambda p: _lm(config, data.grammar).load_state_dict(p["state_dict"]),
        code=(__name__,))
    return payload["state_dict"], {k: payload[k] for k in ("source_loss", "source_accuracy")}


def _nlg_source_metrics(model: nn.Module, data: NLGData) -> dict[str, float]:
    source_logits = model(data.source_test.tokens)
    return {"source_loss": float(next_token_loss(source_logits, data.source_test.tokens)),
            "source_accuracy": object_accuracy(model(data.retained_test.tokens),
                                               data.retained_test, data.grammar)}


def train_nlg(config: BALoRAReproConfig, arm: str, seed: int, *, lr: float,
              weights: tuple[float, float, float], log: Callable[[dict[str, float]], None]
              | None = None, curves_every_epoch: bool = True,
              device: torch.device | str | None = None) -> dict[str, Any]:
    """Adapt the seed's pretrained LM for ``arm`` on ``device``; curves and final metrics."""
    state, info = nlg_pretrained(config, seed)
    data = _moved(nlg_data(config, seed), device)
    seed_everything(seed)
    model = _lm(config, data.grammar)
    model.load_state_dict(state)
    adapted = adapt_arm(arm, model, rank=config.rank, task="nlg", weights=weights,
                        targets=TinyCausalLM.ADAPTER_TARGETS, device=device)
    if arm == "full_ft":  # the paper freezes embeddings and the LM head in every arm
        for module in (model.tok_emb, model.pos_emb, model.lm_head):
            module.requires_grad_(False)
        adapted = dataclasses.replace(
            adapted, parameters=[p for p in model.parameters() if p.requires_grad])
    tokens = data.down_train.tokens
    bs = config.nlg_batch_size
    optimizer, scheduler = _adamw_cosine(adapted.parameters, lr,
                                         config.nlg_epochs * math.ceil(tokens.shape[0] / bs))
    grammar = data.grammar

    def evaluate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            test_logits = model(data.down_test.tokens)
            val_logits = model(data.down_val.tokens)
            pos = grammar.object_position
            out = {"target_accuracy": object_accuracy(test_logits, data.down_test, grammar),
                   "target_loss": float(F.cross_entropy(test_logits[:, pos - 1],
                                                        data.down_test.clean_objects)),
                   "val_accuracy": float((val_logits[:, pos - 1].argmax(-1)
                                          == data.down_val.tokens[:, pos]).double().mean()),
                   "clean_val_accuracy": object_accuracy(val_logits, data.down_val, grammar),
                   **_nlg_source_metrics(model, data)}
        model.train()
        return out

    def batch_loss(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = tokens[batch.to(tokens.device)]
        logits = model(x)
        return logits, next_token_loss(logits, x), x

    curves = _train(adapted, optimizer, scheduler, tokens.shape[0], batch_loss, evaluate,
                    epochs=config.nlg_epochs, batch_size=bs, seed=seed,
                    curves_every_epoch=curves_every_epoch, log=log)
    final = {name: values[-1] for name, values in curves.items()}
    final["pretrained_source_loss"] = info["source_loss"]
    final["pretrained_source_accuracy"] = info["source_accuracy"]
    return {"final": final, "curves": curves}


TRAIN = {"nlu_digits": train_nlu, "nlg_toy": train_nlg}


# --- the sweep -------------------------------------------------------------------------------

def sweep(config: BALoRAReproConfig, setting: str,
          device: torch.device | str | None = None) -> dict[str, Any]:
    """Learning rates and λ multipliers on the sweep seed's validation data (module docstring).

    Returns each grid's :func:`regzoo.repro.finetune.score_grid` (``searches``), each arm's
    chosen lr, multiplier and validation accuracies (``chosen``), the multipliers and the
    matched accuracy.
    """
    train = TRAIN[setting]
    grid = config.nlu_lr_grid if setting == "nlu_digits" else config.nlg_lr_grid
    rules = {"val_accuracy": lambda record: record["val_accuracy"]}
    searches: dict[str, dict[str, Any]] = {}
    chosen: dict[str, dict[str, Any]] = {}

    def search(arm: str, values: Sequence[float],
               recipe: Callable[[float], tuple[float, tuple[float, float, float]]]) -> float:
        """The best of ``values`` for ``arm``; ``recipe(value)`` gives the (lr, λ's) it means."""
        def run(value: float, seed: int) -> dict[str, float]:
            lr, weights = recipe(value)
            final = train(config, arm, seed, lr=lr, weights=weights, curves_every_epoch=False,
                          device=device)["final"]
            return {k: final[k] for k in ("val_accuracy", "clean_val_accuracy")}

        searches[arm] = score_grid(values, seeds=(config.sweep_seed,), run=run, rules=rules)
        best = searches[arm]["best"]["val_accuracy"]
        chosen[arm] = {"lr": recipe(best)[0], **searches[arm]["runs"][repr(best)][0]}
        return best

    for arm in ("full_ft", "lora", "pissa"):
        if arm in config.arms or arm == "pissa":
            search(arm, grid, lambda lr: (lr, PAPER_WEIGHTS))
    pissa_lr = chosen["pissa"]["lr"]
    multipliers = {arm: search(arm, config.lambda_multipliers,
                               lambda m, arm=arm: (pissa_lr, arm_weights(arm, {arm: m})))
                   for arm in SINGLE_TERM}
    for arm, multiplier in multipliers.items():
        chosen[arm]["multiplier"] = multiplier
    search("ba_lora", grid, lambda lr: (lr, arm_weights("ba_lora", multipliers)))
    chosen["pissa_ba_lr"] = {"lr": chosen["ba_lora"]["lr"]}
    chosen["ba_lora_residual"] = dict(chosen["ba_lora"])
    match = 0.9 * min(chosen[a]["clean_val_accuracy"] for a in MATCHED_ARMS if a in chosen)
    return {"searches": searches, "chosen": chosen, "multipliers": multipliers,
            "match_accuracy": match}


# --- the reproduction ------------------------------------------------------------------------

class BALoRAReproduction(Reproduction):
    """BA-LoRA vs PiSSA and LoRA under inherited bias and noisy labels (NLU and NLG)."""

    slug = "ba_lora"
    config_type = BALoRAReproConfig
    title = "BA-LoRA: Bias-Alleviating Low-Rank Adaptation"
    plot_curves = (("target_accuracy", "downstream test accuracy"),
                   ("worst_group_accuracy", "worst-group accuracy (NLU)"),
                   ("source_accuracy", "source-task accuracy (forgetting)"),
                   ("source_loss", "source-task loss (forgetting)"))
    arm_labels = {"full_ft": "full FT", "lora": "LoRA", "pissa": "PiSSA", "ba_lora": "BA-LoRA",
                  "ba_lora_cons": "PiSSA + consistency", "ba_lora_div": "PiSSA + diversity",
                  "ba_lora_svd": "PiSSA + SVD", "pissa_ba_lr": "PiSSA at BA-LoRA's lr",
                  "ba_lora_residual": "BA-LoRA, residual teacher"}
    # Not arms: the learning-rate searches and the matched-accuracy target depend on the arms
    # present, so adding one on --resume would change what earlier units were compared with.
    unit_axes = ("seeds",)
    table_metrics = ("target_accuracy", "worst_group_accuracy", "bias_gap",
                     "noisy_input_accuracy", "target_ece", "source_accuracy", "source_loss",
                     "source_at_match", "lr")

    def units(self, config: BALoRAReproConfig) -> list[Unit]:
        # Settings alternate so that two processes run the two settings' sweeps side by side.
        return [Unit(setting, arm, seed) for seed in config.seeds for arm in config.arms
                for setting in config.settings]

    def claim(self, config: BALoRAReproConfig) -> Claim:
        setting = "nlu_digits" if "nlu_digits" in config.settings else config.settings[0]
        metric = "worst_group_accuracy" if setting == "nlu_digits" else "target_accuracy"
        return Claim(
            statement=f"BA-LoRA beats PiSSA (its base) on {metric} in {setting} by at least 1 "
            "point (paper v6: better robustness and bias mitigation than LoRA variants; its GLUE "
            "/ GSM8K margins over PiSSA are a few points). Our planted-bias benchmark.",
            metric=metric, setting=setting, method="ba_lora", baseline="pissa", margin=0.01)

    def secondary_claims(self, config: BALoRAReproConfig) -> list[Claim]:
        claims = []
        for setting in config.settings:
            if setting == "nlg_toy":
                claims.append(Claim(
                    statement="NLG: BA-LoRA beats PiSSA on clean downstream object accuracy "
                    "after fine-tuning on a noisy shifted corpus, by at least 1 point.",
                    metric="target_accuracy", setting=setting, method="ba_lora",
                    baseline="pissa", margin=0.01))
            metric = "worst_group_accuracy" if setting == "nlu_digits" else "target_accuracy"
            if "pissa_ba_lr" in config.arms:
                claims.append(Claim(
                    statement=f"{setting}: control — BA-LoRA beats PiSSA trained at BA-LoRA's "
                    f"learning rate on {metric} by at least 1 point (the regularisers alone, "
                    "without the learning-rate difference).",
                    metric=metric, setting=setting, method="ba_lora", baseline="pissa_ba_lr",
                    margin=0.01))
            if "lora" in config.arms:
                claims.append(Claim(
                    statement=f"{setting}: BA-LoRA beats LoRA on {metric} by at least 1 point.",
                    metric=metric, setting=setting, method="ba_lora", baseline="lora",
                    margin=0.01))
            nlu = setting == "nlu_digits"
            claims.append(Claim(
                statement=f"{setting}: at matched downstream accuracy BA-LoRA forgets less than "
                f"PiSSA (source {'accuracy higher by ≥ 1 point' if nlu else 'loss lower by ≥ 0.02'}"
                ").", metric="source_at_match", setting=setting, method="ba_lora",
                baseline="pissa", margin=0.01 if nlu else 0.02, higher_is_better=nlu))
        return claims

    def run_unit(self, config: BALoRAReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        with local_only():
            found = shared_once(env.workdir, f"search_{unit.setting}",
                                lambda: sweep(config, unit.setting, env.device))
        chosen = found["chosen"][unit.arm]
        weights = (arm_weights(unit.arm, found["multipliers"])
                   if unit.arm.startswith("ba_lora") else PAPER_WEIGHTS)
        result = TRAIN[unit.setting](config, unit.arm, unit.seed, lr=chosen["lr"],
                                     weights=weights, log=env.log, device=env.device)
        final, curves = result["final"], result["curves"]
        metrics = dict(final)
        source = curves["source_accuracy" if unit.setting == "nlu_digits" else "source_loss"]
        metrics["source_at_match"] = source_at_matched_target(
            curves["target_accuracy"], source, found["match_accuracy"])
        metrics["match_accuracy"] = found["match_accuracy"]
        metrics["lr"] = chosen["lr"]
        for name, value in zip(("lambda1", "lambda2", "lambda3"), weights):
            metrics[name] = value if unit.arm.startswith("ba_lora") else 0.0
        keep = ("target_accuracy", "worst_group_accuracy", "source_accuracy", "source_loss",
                "val_accuracy")
        return UnitResult(metrics=metrics,
                          curves={k: v for k, v in curves.items() if k in keep})

    def timing(self, config: BALoRAReproConfig, device: torch.device) -> dict[str, Any]:
        """PiSSA step vs BA-LoRA step (teacher forward + three terms) on the NLG model."""
        torch.manual_seed(0)
        grammar = _grammar(0)
        tokens = grammar.sample(config.nlg_batch_size, seed=0).tokens.to(device)
        steps = {}
        for arm in ("pissa", "ba_lora"):
            model = _lm(config, grammar)
            adapted = adapt_arm(arm, model, rank=config.rank, task="nlg", weights=PAPER_WEIGHTS,
                                targets=TinyCausalLM.ADAPTER_TARGETS, device=device)
            optimizer = adapted.optimizer(1e-3)

            def step(model: nn.Module = model, adapted: Adapted = adapted,
                     optimizer: torch.optim.Optimizer = optimizer) -> None:
                logits = model(tokens)
                loss = next_token_loss(logits, tokens)
                if isinstance(adapted.handle, BALoRA):
                    loss = loss + adapted.handle.regularizer(logits, inputs=tokens).total
                adapted.update(optimizer, loss)

            steps[arm] = step
        seconds = time_steps(steps, repeats=5, inner=2, warmup=2, device=device)
        return {"model": "TinyCausalLM", "batch_size": config.nlg_batch_size,
                "pissa_step_seconds": seconds["pissa"], "ba_lora_step_seconds": seconds["ba_lora"],
                "ba_lora_over_pissa": seconds["ba_lora"] / seconds["pissa"]}

    def note(self, config: BALoRAReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        mean = functools.partial(summary_mean, aggregate)

        parts = []
        for setting in config.settings:
            cells = []
            for arm in config.arms:
                values = {m: mean(setting, arm, m) for m in
                          ("target_accuracy", "worst_group_accuracy", "source_at_match",
                           "source_loss", "lr", "lambda1", "lambda2", "lambda3")}
                if values["target_accuracy"] is None:
                    continue
                text = f"{self.arm_labels[arm]}: acc {values['target_accuracy']:.3f}"
                if values["worst_group_accuracy"] is not None:
                    text += f", worst-group {values['worst_group_accuracy']:.3f}"
                if values["source_at_match"] is not None:
                    text += f", source@match {values['source_at_match']:.3f}"
                text += f" (lr {values['lr']:g}"
                if arm.startswith("ba_lora"):
                    text += (f", λ = ({values['lambda1']:.0e}, {values['lambda2']:.0e}, "
                             f"{values['lambda3']:.0e})")
                cells.append(text + ")")
            if cells:
                parts.append(f"{setting} — " + "; ".join(cells))
        measured = ("Measured (means over seeds): " + ". ".join(parts) + ". ") if parts else ""
        return (
            measured + self._reading(config, mean)
            + "Both benchmarks are ours (a planted watermark and label noise on digits; a toy "
            "grammar with noisy objects), not the paper's. Learning rates and each term's λ "
            "multiplier were chosen on a separate sweep seed by noisy validation accuracy; the "
            "paper's λ = (1e-4, 3e-4, 1e-4) is the multiplier 1. BA-LoRA uses the λ's each "
            "term chose alone. The official SVD term crashes (IndexError); ours is the paper's "
            "per-example top-k share. BA-LoRA's teacher is a frozen copy of the pretrained "
            "model (the paper); 'BA-LoRA, residual teacher' uses PiSSA's residual W − s·B₀A₀ "
            "instead (what the official scripts most likely load; same learning rate and λ's)."
        )


    def _reading(self, config: BALoRAReproConfig,
                 mean: Callable[[str, str, str], float | None]) -> str:
        """Which term moved the robustness metric, the learning-rate control, forgetting."""
        sentences = []
        for setting in config.settings:
            metric = "worst_group_accuracy" if setting == "nlu_digits" else "target_accuracy"
            base = mean(setting, "pissa", metric)
            if base is None:
                continue
            deltas = [f"{self.arm_labels[arm]} {value - base:+.3f}" for arm in
                      ("ba_lora_cons", "ba_lora_div", "ba_lora_svd", "ba_lora", "pissa_ba_lr",
                       "ba_lora_residual")
                      if (value := mean(setting, arm, metric)) is not None]
            if deltas:
                sentences.append(f"{setting}: {metric} minus PiSSA's — " + ", ".join(deltas))
            match = mean(setting, "pissa", "match_accuracy")
            at = mean(setting, "ba_lora", "source_at_match")
            if match is not None and (at is None or math.isnan(at)):
                sentences.append(f"{setting}: source_at_match is NaN because at least one seed "
                                 f"never reached the matched accuracy {match:.3f}")
            lam1 = mean(setting, "ba_lora", "lambda1")
            if lam1 is not None and lam1 <= PAPER_WEIGHTS[0]:
                sentences.append(f"{setting}: the sweep kept the paper's λ1 = {lam1:g} for the "
                                 "consistency term (larger λ1 lowered or did not raise noisy "
                                 "validation accuracy), a weight at which the term barely acts, "
                                 "so it cannot reduce forgetting here")
        return ("Reading: " + ". ".join(sentences) + ". ") if sentences else ""


REPRODUCTION = BALoRAReproduction()
