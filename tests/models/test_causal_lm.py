"""TinyCausalLM and the toy corpus: causality, shapes, learning, the grammar's rules."""

import pytest
import torch

from regzoo.data.text_corpus import ToyGrammar, object_accuracy
from regzoo.models.causal_lm import CausalLMConfig, TinyCausalLM, next_token_loss


def _model(vocab=13, **kw):
    torch.manual_seed(0)
    return TinyCausalLM(CausalLMConfig(vocab_size=vocab, max_len=9, d_model=32, n_heads=4,
                                       d_ff=64, **kw))


def test_logits_have_shape_batch_length_vocab_and_projections_are_linear():
    model = _model()
    tokens = torch.randint(0, 13, (3, 7))
    assert model(tokens).shape == (3, 7, 13)
    for target in TinyCausalLM.ADAPTER_TARGETS:
        layers = [m for n, m in model.named_modules() if n.endswith(target)]
        assert len(layers) == 2 and all(isinstance(m, torch.nn.Linear) for m in layers)


def test_future_tokens_do_not_change_past_logits():
    model = _model().eval()
    tokens = torch.randint(0, 13, (2, 9), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 3) % 13
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert float((a[:, 5:] - b[:, 5:]).abs().max()) > 1e-4


def test_next_token_loss_shifts_by_one_and_ignores_padding():
    logits = torch.randn(2, 4, 6)
    tokens = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    per = next_token_loss(logits, tokens, pad_id=0, reduction="none")
    ref = torch.nn.functional.cross_entropy(logits[0, 0], tokens[0, 1])
    torch.testing.assert_close(per[0, 0], ref)
    assert float(per[0, 2]) == 0.0 and float(per[1, 1]) == 0.0
    torch.testing.assert_close(next_token_loss(logits, tokens, pad_id=0), per.sum() / 3)
    with pytest.raises(ValueError, match="share"):
        next_token_loss(logits, tokens[:, :3])
    with pytest.raises(ValueError, match="reduction"):
        next_token_loss(logits, tokens, reduction="avg")


def test_training_on_the_toy_corpus_lowers_the_loss_and_learns_objects():
    torch.set_num_threads(1)
    grammar = ToyGrammar(n_nouns=6, n_verbs=3, n_adjectives=3)
    corpus = grammar.sample(256, seed=0)
    model = _model(vocab=grammar.vocab_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        start = float(next_token_loss(model(corpus.tokens), corpus.tokens))
    for _ in range(120):
        batch = corpus.tokens[torch.randint(0, 256, (64,))]
        optimizer.zero_grad()
        next_token_loss(model(batch), batch).backward()
        optimizer.step()
    with torch.no_grad():
        logits = model(corpus.tokens)
    assert float(next_token_loss(logits, corpus.tokens)) < 0.6 * start
    assert object_accuracy(logits, corpus, grammar) > 0.5  # chance is 1/6


def test_grammar_rules_noise_and_shift():
    grammar = ToyGrammar(n_nouns=12, n_verbs=6, shifted_verbs=3, shift=5, seed=3)
    base, shifted = grammar.offsets("pretrain"), grammar.offsets("shifted")
    assert torch.equal(base[3:], shifted[3:])
    assert torch.equal((shifted[:3] - base[:3]) % 12, torch.full((3,), 5))
    clean = grammar.sample(400, seed=1)
    assert not clean.noisy.any()
    assert torch.equal(clean.tokens[:, grammar.object_position], clean.clean_objects)
    subj = clean.tokens[:, 3] - 4
    verb = clean.tokens[:, 4] - 4 - 12
    assert torch.equal(clean.clean_objects - 4, (subj + base[verb]) % 12)
    noisy = grammar.sample(4000, noise=0.3, seed=2)
    rate = float(noisy.noisy.double().mean())
    assert 0.3 * 11 / 12 - 0.03 < rate < 0.3 * 11 / 12 + 0.03
    assert torch.equal(noisy.tokens[:, 7] != noisy.clean_objects, noisy.noisy)
    only = grammar.sample(50, seed=3, verbs=torch.tensor([1]))
    assert bool((only.tokens[:, 4] == 4 + 12 + 1).all())
    assert grammar.decode(clean.tokens[:1])[0].startswith("<bos> the a")
    with pytest.raises(ValueError, match="shift"):
        ToyGrammar(n_nouns=12, shift=24)
    with pytest.raises(ValueError, match="verbs"):
        grammar.sample(5, verbs=torch.tensor([9]))
    with pytest.raises(ValueError, match="divisible"):
        CausalLMConfig(vocab_size=5, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="max_len"):
        _model()(torch.zeros(1, 10, dtype=torch.int64))
