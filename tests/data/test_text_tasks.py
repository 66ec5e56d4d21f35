"""Templated text tasks: determinism, held-out words, paraphrases, labels, bad input."""

import pytest
import torch

from regzoo.data.text_tasks import (
    _NEGATIVE,
    _POSITIVE,
    _SENTIMENT_TEST,
    _SENTIMENT_TRAIN,
    _TOPIC_TEST,
    _TOPIC_TRAIN,
    DOMAINS,
    TASKS,
    make_text_task,
    sentiment_task,
    topic_task,
    words,
)


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_gives_the_same_task_and_another_seed_a_different_one(name):
    first, again, other = (make_text_task(name, s) for s in (3, 3, 4))
    assert first.train_texts == again.train_texts and first.test_texts == again.test_texts
    assert torch.equal(first.train_labels, again.train_labels)
    assert first.held_out_words == again.held_out_words
    assert first.train_texts != other.train_texts


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_held_out_words_occur_in_test_sentences_and_in_no_training_sentence(name, seed):
    task = make_text_task(name, seed)
    train_words = set().union(*(words(t) for t in task.train_texts))
    test_words = set().union(*(words(t) for t in task.test_texts))
    assert task.held_out_words
    assert not task.held_out_words & train_words
    assert task.held_out_words <= test_words
    # Every test sentence carries a held-out content word.
    assert all(words(t) & task.held_out_words for t in task.test_texts)


@pytest.mark.parametrize(("train", "test"), [(_SENTIMENT_TRAIN, _SENTIMENT_TEST),
                                         (tuple((t, False) for t in _TOPIC_TRAIN),
                                          tuple((t, False) for t in _TOPIC_TEST))])
def test_test_templates_are_paraphrases_never_used_in_training(train, test):
    assert not {t for t, _ in train} & {t for t, _ in test}


@pytest.mark.parametrize("domain", DOMAINS)
def test_sentiment_labels_flip_with_negation_and_classes_are_balanced(domain):
    task = sentiment_task(0, domain=domain, shots=16, test_per_class=40)
    assert task.classes == ("negative", "positive") and len(task.prompts) == 2
    assert torch.bincount(task.train_labels).tolist() == [16, 16]
    assert torch.bincount(task.test_labels).tolist() == [40, 40]
    negated = task.test_groups["negated"]
    assert int(negated.sum()) == 40  # half of each class
    for texts, labels, flags in ((task.test_texts, task.test_labels, negated),
                                 (task.train_texts, task.train_labels, None)):
        for i, (text, label) in enumerate(zip(texts, labels.tolist())):
            (adjective,) = words(text) & set(_POSITIVE + _NEGATIVE)
            is_negated = (bool(flags[i]) if flags is not None
                          else bool(words(text) & {"not", "never"}))
            assert label == int((adjective in _POSITIVE) != is_negated), text


def test_negation_fraction_zero_gives_no_negated_sentences():
    task = sentiment_task(1, negation_fraction=0.0)
    assert not task.test_groups["negated"].any()
    assert not any(" not " in t or "never" in t for t in task.train_texts)


def test_topic_task_has_four_balanced_classes_and_prompts():
    task = topic_task(2, shots=8, test_per_class=10)
    assert task.num_classes == 4 and len(task.prompts) == 4
    assert torch.bincount(task.train_labels).tolist() == [8] * 4
    assert torch.bincount(task.test_labels).tolist() == [10] * 4


def test_training_sentences_are_distinct():
    task = sentiment_task(5, shots=64)
    assert len(set(task.train_texts)) == len(task.train_texts)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: make_text_task("sentiment_cars", 0), "name must be one of"),
    (lambda: sentiment_task(0, domain="cars"), "domain must be one of"),
    (lambda: sentiment_task(0, shots=0), "shots must be >= 1"),
    (lambda: sentiment_task(-1), "seed must be >= 0"),
    (lambda: sentiment_task(0, negation_fraction=1.5), "negation_fraction"),
    (lambda: sentiment_task(0, held_out_fraction=1.0), "held_out_fraction"),
    (lambda: topic_task(0, test_per_class=10_000), "test_per_class: asked for 10000"),
])
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_non_integer_seed_is_a_type_error():
    with pytest.raises(TypeError, match="seed must be an int"):
        sentiment_task(1.5)
