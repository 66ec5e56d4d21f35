"""An offline toy language for tiny causal LMs: templated sentences with a learnable rule.

Every sentence has the fixed template ``<bos> the ADJ SUBJ VERB the ADJ OBJ .`` (9 tokens). The
adjectives are uniform random filler (unpredictable tokens, like real text's noise floor); the
object is the only predictable content word: ``OBJ = (SUBJ + offset[VERB]) mod n_nouns`` with one
offset per verb. A *corpus* draws subjects, verbs and fillers uniformly and may replace a share
of the objects by uniform random nouns (noisy "labels"); the clean object is kept alongside.

Two rules come with a :class:`ToyGrammar`:

* ``"pretrain"``: the base offsets, used for the pretraining corpus;
* ``"shifted"``: the offsets of ``shifted_verbs`` moved by ``shift`` (the others unchanged), the
  downstream corpus. Fine-tuning on it conflicts with the pretraining rule for those verbs, so
  the loss on the pretraining corpus measures forgetting.

Object accuracy (argmax of the next-token logits at :attr:`ToyGrammar.object_position` equal to
the clean object) is the downstream accuracy. Nothing is downloaded; a seed fixes everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regzoo.core.checks import check_choice, check_positive_int, check_range

SPECIALS: tuple[str, ...] = ("<pad>", "<bos>", ".", "the")


@dataclass(frozen=True)
class Corpus:
    """Token ids ``(N, 9)``; ``clean_objects`` the rule's objects; ``noisy`` which were replaced."""

    tokens: torch.Tensor
    clean_objects: torch.Tensor
    noisy: torch.Tensor
    rule: str

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class ToyGrammar:
    """The vocabulary and the two object rules (see the module docstring).

    Args:
        n_nouns: nouns (subjects and objects share them).
        n_verbs: verbs, each with its own offset.
        n_adjectives: filler adjectives.
        shifted_verbs: how many verbs (the first ones) change their offset in the shifted rule.
        shift: the change of their offset.
        seed: draws the base offsets.
    """

    n_nouns: int = 12
    n_verbs: int = 6
    n_adjectives: int = 8
    shifted_verbs: int = 3
    shift: int = 5
    seed: int = 0

    object_position: int = 7
    """Index of the object token; its logits are read at ``object_position - 1``."""
    length: int = 9

    def __post_init__(self) -> None:
        check_positive_int("n_nouns", self.n_nouns, minimum=2)
        check_positive_int("n_verbs", self.n_verbs)
        check_positive_int("n_adjectives", self.n_adjectives)
        check_positive_int("shifted_verbs", self.shifted_verbs, minimum=0)
        if self.shifted_verbs > self.n_verbs:
            raise ValueError(f"shifted_verbs ({self.shifted_verbs}) must be <= n_verbs "
                             f"({self.n_verbs})")
        if self.shifted_verbs and self.shift % self.n_nouns == 0:
            raise ValueError(f"shift ({self.shift}) must not be a multiple of n_nouns "
                             f"({self.n_nouns}), or the shifted rule equals the pretraining rule")

    @property
    def vocab(self) -> tuple[str, ...]:
        """Token strings, index = token id."""
        return (SPECIALS + tuple(f"n{i}" for i in range(self.n_nouns))
                + tuple(f"v{i}" for i in range(self.n_verbs))
                + tuple(f"a{i}" for i in range(self.n_adjectives)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def noun_ids(self) -> torch.Tensor:
        return torch.arange(len(SPECIALS), len(SPECIALS) + self.n_nouns)

    def offsets(self, rule: str) -> torch.Tensor:
        """Per-verb offsets of ``rule`` (``"pretrain"`` or ``"shifted"``)."""
        check_choice("rule", rule, ("pretrain", "shifted"))
        g = torch.Generator().manual_seed(self.seed)
        base = torch.randint(1, self.n_nouns, (self.n_verbs,), generator=g)
        if rule == "shifted":
            base = base.clone()
            base[: self.shifted_verbs] = (base[: self.shifted_verbs] + self.shift) % self.n_nouns
        return base

    def sample(self, n: int, *, rule: str = "pretrain", noise: float = 0.0,
               seed: int = 0, verbs: torch.Tensor | None = None) -> Corpus:
        """``n`` sentences under ``rule``, a share ``noise`` of objects replaced at random.

        ``verbs`` restricts the verbs drawn (default: all of them).
        """
        check_positive_int("n", n)
        check_range("noise", noise, 0.0, 1.0)
        offsets = self.offsets(rule)
        g = torch.Generator().manual_seed(seed)
        pool = torch.arange(self.n_verbs) if verbs is None else torch.as_tensor(verbs)
        if pool.numel() == 0 or bool(((pool < 0) | (pool >= self.n_verbs)).any()):
            raise ValueError(f"verbs must be non-empty indices in [0, {self.n_verbs - 1}], "
                             f"got {pool.tolist()}")
        subj = torch.randint(0, self.n_nouns, (n,), generator=g)
        verb = pool[torch.randint(0, pool.numel(), (n,), generator=g)]
        adj = torch.randint(0, self.n_adjectives, (n, 2), generator=g)
        clean = (subj + offsets[verb]) % self.n_nouns
        noisy = torch.rand(n, generator=g) < noise
        obj = torch.where(noisy, torch.randint(0, self.n_nouns, (n,), generator=g), clean)
        s = len(SPECIALS)
        noun0, verb0, adj0 = s, s + self.n_nouns, s + self.n_nouns + self.n_verbs
        bos, dot, the = SPECIALS.index("<bos>"), SPECIALS.index("."), SPECIALS.index("the")
        column = torch.full((n,), 0, dtype=torch.int64)
        tokens = torch.stack([column + bos, column + the, adj0 + adj[:, 0], noun0 + subj,
                              verb0 + verb, column + the, adj0 + adj[:, 1], noun0 + obj,
                              column + dot], dim=1)
        return Corpus(tokens=tokens, clean_objects=noun0 + clean, noisy=noisy & (obj != clean),
                      rule=rule)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Sentences as strings (for inspection)."""
        vocab = self.vocab
        rows = tokens.reshape(-1, tokens.shape[-1])
        return [" ".join(vocab[int(t)] for t in row) for row in rows]


def object_accuracy(logits: torch.Tensor, corpus: Corpus, grammar: ToyGrammar) -> float:
    """Share of sentences whose argmax next-token prediction at the object is the clean object."""
    predicted = logits[:, grammar.object_position - 1].argmax(dim=-1)
    return float((predicted == corpus.clean_objects.to(predicted.device)).double().mean())
