"""Long training inputs joined from a task's own examples (``kron_transformers.augmentation``)."""

import pytest
from transformers import AutoTokenizer

from kron_transformers import assets
from kron_transformers.augmentation import join_examples


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(assets.minilm_path())


def examples(tokenizer):
    """Short texts whose words name their class, of several lengths, tokenized with special tokens."""
    texts, labels = [], []
    for i in range(60):
        label = i % 3
        word = ("good", "bad", "odd")[label]
        texts.append(" ".join([word] * (3 + i % 7)))
        labels.append(label)
    return tokenizer(texts)["input_ids"], labels


def test_joined_inputs_have_their_drawn_lengths_one_class_and_the_special_tokens(tokenizer):
    input_ids, labels = examples(tokenizer)
    sequences, targets = join_examples(input_ids, labels, tokenizer, 200, 20, 48, seed=0)
    assert len(sequences) == len(targets) == 200
    lengths = [len(ids) for ids in sequences]
    assert min(lengths) >= 20 and max(lengths) <= 48
    assert len(set(lengths)) > 10  # drawn, not fixed
    words = {tokenizer.convert_tokens_to_ids(w): label for label, w in enumerate(("good", "bad", "odd"))}
    for ids, target in zip(sequences, targets):
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        body = ids[1:-1]
        assert tokenizer.cls_token_id not in body and tokenizer.sep_token_id not in body
        assert {words[token] for token in body} == {target}  # only texts of its own class
    # The classes keep about their training proportions (a third each).
    assert all(40 <= targets.count(label) <= 95 for label in range(3))


def test_joining_is_reproducible_by_seed(tokenizer):
    input_ids, labels = examples(tokenizer)
    first = join_examples(input_ids, labels, tokenizer, 20, 20, 48, seed=3)
    assert first == join_examples(input_ids, labels, tokenizer, 20, 20, 48, seed=3)
    assert first != join_examples(input_ids, labels, tokenizer, 20, 20, 48, seed=4)


def test_a_class_too_short_to_fill_the_length_gives_all_its_text_once(tokenizer):
    input_ids, labels = examples(tokenizer)
    sequences, targets = join_examples(input_ids[:2], labels[:2], tokenizer, 4, 100, 100, seed=0)
    for ids, target in zip(sequences, targets):
        assert len(ids) == len(input_ids[target]) and ids == input_ids[target]


@pytest.mark.parametrize("count, low, high, message", [
    (-1, 20, 40, "count must be >= 0; got -1"),
    (5, 2, 40, "got min_length=2, max_length=40"),
    (5, 50, 40, "got min_length=50, max_length=40"),
])
def test_bad_arguments_are_named(tokenizer, count, low, high, message):
    input_ids, labels = examples(tokenizer)
    with pytest.raises(ValueError, match=message):
        join_examples(input_ids, labels, tokenizer, count, low, high)
    with pytest.raises(ValueError, match="differ in length: 60 and 59"):
        join_examples(input_ids, labels[:-1], tokenizer, 5, 20, 40)
    assert join_examples(input_ids, labels, tokenizer, 0, 20, 40) == ([], [])


def test_text_blocks_are_cut_from_the_token_stream_at_drawn_lengths(tokenizer):
    from kron_transformers.augmentation import text_blocks

    texts = [f"article {i} " + "the news of the day " * (3 + i) for i in range(20)]
    stream = [t for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for t in ids]
    blocks = text_blocks(texts, tokenizer, 50, 16, 40, seed=1)
    assert len(blocks) == 50 and len({len(b) for b in blocks}) > 5
    for ids in blocks:
        assert 16 <= len(ids) <= 40 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        body = ids[1:-1]
        assert any(stream[i:i + len(body)] == body for i in range(len(stream) - len(body) + 1))
    assert blocks == text_blocks(texts, tokenizer, 50, 16, 40, seed=1)
    assert text_blocks(texts, tokenizer, 0, 16, 40) == []
    with pytest.raises(ValueError, match="too few for blocks of up to 100000"):
        text_blocks(texts, tokenizer, 3, 16, 100000)
    with pytest.raises(ValueError, match="got min_length=50, max_length=40"):
        text_blocks(texts, tokenizer, 3, 50, 40)
