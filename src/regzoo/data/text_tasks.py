"""Offline templated text-classification tasks with held-out words and paraphrases at test time.

Sentences are filled into templates from small word lists, so nothing is downloaded and every
task is a deterministic function of its ``seed``. Each task keeps its test set out of
distribution on purpose, which keeps a zero-shot or few-shot classifier well below its ceiling:

* **held-out words**: each class's content words (sentiment adjectives, topic keywords) are
  split by the seed; a fraction appears only in test sentences (:attr:`TextTask.held_out_words`
  never occurs in a training sentence);
* **paraphrases**: test sentences use templates that never occur in training (other sentence
  frames and, for sentiment, other negation cues: "isn't", "far from", "nobody would say").

Tasks (:data:`TASKS`):

* ``sentiment_<domain>`` (domains :data:`DOMAINS`: restaurant, movie, product): binary
  sentiment in which a fraction of the sentences (default half) is negated ("the soup was not
  bad"), so the label is the adjective's polarity flipped. Sentence embedders scored by
  similarity to label prompts are weak exactly there: the negated half of the test set is
  tagged in :attr:`TextTask.test_groups` ``["negated"]``.
* ``topic``: four topics (sports, science, cooking, music) named through keywords; pretrained
  sentence embedders classify it almost perfectly zero-shot, which makes it a probe of how much
  general knowledge a tuned encoder keeps.

Every task carries label prompts (one natural-language description per class) for a CLIP-style
zero-shot classifier: class scores are cosine similarities between a sentence's embedding and
the prompts' embeddings.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field

import torch

from regzoo.core.checks import check_choice, check_positive_int, check_range

DOMAINS: tuple[str, ...] = ("restaurant", "movie", "product")
TASKS: tuple[str, ...] = (*(f"sentiment_{d}" for d in DOMAINS), "topic")

_POSITIVE = ("good", "great", "excellent", "wonderful", "delightful", "superb", "lovely",
             "fantastic", "pleasant", "amazing", "outstanding", "terrific", "enjoyable",
             "brilliant", "impressive", "marvelous", "splendid", "fabulous", "satisfying",
             "nice", "remarkable", "charming", "exceptional", "perfect")
_NEGATIVE = ("bad", "awful", "terrible", "horrible", "dreadful", "poor", "disappointing",
             "mediocre", "unpleasant", "bland", "boring", "lousy", "atrocious", "dismal",
             "annoying", "miserable", "pathetic", "disgusting", "inferior", "tedious",
             "unbearable", "shoddy", "abysmal", "frustrating")
_NOUNS = {
    "restaurant": ("meal", "soup", "service", "dessert", "pasta", "staff", "atmosphere",
                   "steak", "coffee", "menu"),
    "movie": ("film", "plot", "acting", "ending", "soundtrack", "script", "cast", "dialogue",
              "director", "sequel"),
    "product": ("phone", "battery", "charger", "keyboard", "screen", "blender", "headphones",
                "laptop", "camera", "printer"),
}
# (template, negated): {n} is the domain noun, {a} the adjective.
_SENTIMENT_TRAIN = (
    ("the {n} was {a}.", False),
    ("i thought the {n} was {a}.", False),
    ("overall, the {n} felt {a}.", False),
    ("we found the {n} {a}.", False),
    ("the {n} was not {a}.", True),
    ("i did not think the {n} was {a}.", True),
    ("overall, the {n} did not feel {a}.", True),
    ("we never found the {n} {a}.", True),
)
_SENTIMENT_TEST = (
    ("honestly, the {n} is {a}.", False),
    ("my friends agreed the {n} seemed {a}.", False),
    ("they said the {n} looked really {a}.", False),
    ("in my opinion the {n} turned out {a}.", False),
    ("honestly, the {n} isn't {a}.", True),
    ("my friends agreed the {n} was hardly {a}.", True),
    ("nobody would say the {n} looked {a}.", True),
    ("in my opinion the {n} turned out far from {a}.", True),
)
_SENTIMENT_CLASSES = ("negative", "positive")
_SENTIMENT_PROMPTS = ("a negative review.", "a positive review.")

_TOPIC_CLASSES = ("sports", "science", "cooking", "music")
_TOPIC_KEYWORDS = {
    "sports": ("football", "basketball", "tennis", "marathon", "goalkeeper", "stadium",
               "olympics", "referee", "cycling", "swimming", "baseball", "hockey"),
    "science": ("physics", "chemistry", "telescope", "molecules", "laboratory", "genetics",
                "astronomy", "experiment", "microscope", "neurons", "quantum", "bacteria"),
    "cooking": ("recipes", "baking", "oven", "spices", "kitchen", "dough", "grilling",
                "sauce", "pastry", "seasoning", "roasting", "chef"),
    "music": ("guitar", "concert", "orchestra", "melody", "piano", "singer", "drummer",
              "album", "violin", "jazz", "choir", "symphony"),
}
_TOPIC_TRAIN = ("the article is about {k}.", "we talked about {k} all evening.",
                "she wrote a long post on {k}.", "this week's class covered {k}.",
                "the magazine had a special issue on {k}.")
_TOPIC_TEST = ("my favourite podcast covers {k}.", "the news tonight featured {k}.",
               "he cannot stop reading about {k}.", "a documentary on {k} aired today.",
               "our neighbours are obsessed with {k}.", "the lecture tomorrow is on {k}.")
_TOPIC_PROMPTS = tuple(f"a text about {c}." for c in _TOPIC_CLASSES)

_WORD = re.compile(r"[a-z']+")


def words(text: str) -> set[str]:
    """The lower-case word tokens of ``text`` (what "a word occurs in a sentence" means here)."""
    return set(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class TextTask:
    """A labelled text task: train/test sentences, class names and zero-shot label prompts."""

    name: str
    classes: tuple[str, ...]
    prompts: tuple[str, ...]
    """One label prompt per class, in class order, for a prompt-similarity classifier."""
    train_texts: tuple[str, ...]
    train_labels: torch.Tensor
    test_texts: tuple[str, ...]
    test_labels: torch.Tensor
    held_out_words: frozenset[str]
    """Content words that occur in test sentences and in no training sentence."""
    test_groups: dict[str, torch.Tensor] = field(default_factory=dict)
    """Boolean masks over the test set naming sub-populations (e.g. ``"negated"``)."""

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def _split(pool: tuple[str, ...], held_out_fraction: float, rng: random.Random
           ) -> tuple[list[str], list[str]]:
    """Shuffle ``pool`` with ``rng``; return (train words, held-out words), both non-empty."""
    shuffled = sorted(pool)
    rng.shuffle(shuffled)
    held = min(len(pool) - 1, max(1, round(held_out_fraction * len(pool))))
    return shuffled[held:], shuffled[:held]


def _draw(candidates: list[tuple[str, int, bool]], count: int, rng: random.Random,
          what: str) -> list[tuple[str, int, bool]]:
    if count > len(candidates):
        raise ValueError(f"{what}: asked for {count} distinct sentences per class but the "
                         f"templates give only {len(candidates)}; lower the count")
    return rng.sample(candidates, count)


def _as_task(name: str, classes: tuple[str, ...], prompts: tuple[str, ...],
             train: list[tuple[str, int, bool]], test: list[tuple[str, int, bool]],
             held_out: set[str], rng: random.Random, group: str | None) -> TextTask:
    rng.shuffle(train)
    rng.shuffle(test)
    groups = ({group: torch.tensor([flag for _, _, flag in test], dtype=torch.bool)}
              if group else {})
    return TextTask(
        name=name, classes=classes, prompts=prompts,
        train_texts=tuple(t for t, _, _ in train),
        train_labels=torch.tensor([y for _, y, _ in train], dtype=torch.long),
        test_texts=tuple(t for t, _, _ in test),
        test_labels=torch.tensor([y for _, y, _ in test], dtype=torch.long),
        held_out_words=frozenset(held_out), test_groups=groups)


def sentiment_task(seed: int, *, domain: str = "restaurant", shots: int = 16,
                   test_per_class: int = 100, negation_fraction: float = 0.5,
                   held_out_fraction: float = 0.4) -> TextTask:
    """Binary sentiment with negation; held-out adjectives and paraphrased templates at test.

    Args:
        seed: fixes the adjective split and every sentence drawn.
        domain: one of :data:`DOMAINS` (which nouns the sentences talk about).
        shots: training sentences per class (the paper's few-shot protocol uses 16).
        test_per_class: test sentences per class.
        negation_fraction: share of sentences (train and test) whose template negates the
            adjective, so that the label is the adjective's polarity flipped.
        held_out_fraction: share of each polarity's adjectives kept for test sentences only.
    """
    check_positive_int("seed", seed, minimum=0)
    check_choice("domain", domain, DOMAINS)
    check_positive_int("shots", shots)
    check_positive_int("test_per_class", test_per_class)
    check_range("negation_fraction", negation_fraction, 0.0, 1.0)
    check_range("held_out_fraction", held_out_fraction, 0.0, 1.0, low_inclusive=False,
                high_inclusive=False)
    rng = random.Random(f"sentiment/{domain}/{seed}")
    pos_train, pos_test = _split(_POSITIVE, held_out_fraction, rng)
    neg_train, neg_test = _split(_NEGATIVE, held_out_fraction, rng)
    nouns = _NOUNS[domain]

    def sample(templates: tuple[tuple[str, bool], ...], positive: list[str], negative: list[str],
               per_class: int, what: str) -> list[tuple[str, int, bool]]:
        drawn: list[tuple[str, int, bool]] = []
        for label in (0, 1):
            by_negation = {}
            for negated in (False, True):
                # label 1 = positive: a positive adjective plainly, or a negative one negated.
                adjectives = positive if (label == 1) != negated else negative
                by_negation[negated] = [
                    (template.format(n=n, a=a), label, negated)
                    for (template, neg), n, a in itertools.product(templates, nouns, adjectives)
                    if neg == negated]
            n_negated = round(negation_fraction * per_class)
            drawn += _draw(by_negation[True], n_negated, rng, what)
            drawn += _draw(by_negation[False], per_class - n_negated, rng, what)
        return drawn

    train = sample(_SENTIMENT_TRAIN, pos_train, neg_train, shots, "shots")
    test = sample(_SENTIMENT_TEST, pos_test, neg_test, test_per_class, "test_per_class")
    return _as_task(f"sentiment_{domain}", _SENTIMENT_CLASSES, _SENTIMENT_PROMPTS, train, test,
                    set(pos_test) | set(neg_test), rng, "negated")


def topic_task(seed: int, *, shots: int = 16, test_per_class: int = 25,
               held_out_fraction: float = 0.4) -> TextTask:
    """Four-topic classification from keywords; held-out keywords and templates at test.

    Args:
        seed: fixes the keyword split and every sentence drawn.
        shots: training sentences per class.
        test_per_class: test sentences per class.
        held_out_fraction: share of each topic's keywords kept for test sentences only.
    """
    check_positive_int("seed", seed, minimum=0)
    check_positive_int("shots", shots)
    check_positive_int("test_per_class", test_per_class)
    check_range("held_out_fraction", held_out_fraction, 0.0, 1.0, low_inclusive=False,
                high_inclusive=False)
    rng = random.Random(f"topic/{seed}")
    splits = {c: _split(_TOPIC_KEYWORDS[c], held_out_fraction, rng) for c in _TOPIC_CLASSES}
    train: list[tuple[str, int, bool]] = []
    test: list[tuple[str, int, bool]] = []
    for label, topic in enumerate(_TOPIC_CLASSES):
        seen, held = splits[topic]
        train += _draw([(t.format(k=k), label, False)
                        for t, k in itertools.product(_TOPIC_TRAIN, seen)], shots, rng, "shots")
        test += _draw([(t.format(k=k), label, False)
                       for t, k in itertools.product(_TOPIC_TEST, held)], test_per_class, rng,
                      "test_per_class")
    held_out = set().union(*(held for _, held in splits.values()))
    return _as_task("topic", _TOPIC_CLASSES, _TOPIC_PROMPTS, train, test, held_out, rng, None)


def make_text_task(name: str, seed: int, **options: object) -> TextTask:
    """The task ``name`` (one of :data:`TASKS`) for ``seed``; ``options`` go to its generator."""
    check_choice("name", name, TASKS)
    if name == "topic":
        return topic_task(seed, **options)  # type: ignore[arg-type]
    return sentiment_task(seed, domain=name.removeprefix("sentiment_"),
                          **options)  # type: ignore[arg-type]
