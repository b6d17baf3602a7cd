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


def word_ids(tokenizer, embeddings):
    """Ids of the one-token words (alphabetic, not ## pieces, not special), found here independently."""
    specials = set(tokenizer.all_special_ids)
    return [i for i in range(embeddings.shape[0]) if i not in specials
            and tokenizer.convert_ids_to_tokens(i).isalpha()]


def test_replaced_words_are_nearest_neighbours_and_everything_else_is_kept(tokenizer):
    from kron_transformers.augmentation import replace_words

    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(len(tokenizer), 8, generator=generator, dtype=torch.float64)
    texts = ["the film is good, 42 minutes of unbelievably gripping fun!", "bad acting; a tedious plot."]
    input_ids = tokenizer(texts)["input_ids"]
    words = word_ids(tokenizer, embeddings)
    unit = embeddings / embeddings.norm(dim=-1, keepdim=True)

    def nearest(token, k):  # by an explicit loop over the one-token words, the word itself excluded
        scores = sorted(((float(unit[token] @ unit[other]), other) for other in words if other != token), reverse=True)
        return {other for _, other in scores[:k]}

    sequences, sources = replace_words(input_ids, tokenizer, embeddings, 40, probability=1.0, candidates=3, seed=2)
    assert len(sequences) == 40 and sorted(sources) == sorted([0, 1] * 20)
    assert sorted(sources[:2]) == [0, 1]  # every example once before any repeats
    replaced = 0
    for ids, source in zip(sequences, sources):
        original = input_ids[source]
        assert len(ids) == len(original)
        pieces = tokenizer.convert_ids_to_tokens(original)
        for position, (new, old) in enumerate(zip(ids, original)):
            following = pieces[position + 1] if position + 1 < len(pieces) else ""
            one_token_word = old in words and not following.startswith("##")
            if one_token_word:  # probability 1: always replaced, by one of its 3 nearest words
                assert new != old and new in nearest(old, 3)
                replaced += 1
            else:  # special tokens, numbers, punctuation and the pieces of longer words stay
                assert new == old
    assert replaced > 100
    # "unbelievably" is several pieces: kept whole, never a piece of it replaced.
    assert "##" in "".join(tokenizer.tokenize("unbelievably"))
    assert replace_words(input_ids, tokenizer, embeddings, 40, 1.0, 3, seed=2) == (sequences, sources)
    assert replace_words(input_ids, tokenizer, embeddings, 40, 1.0, 3, seed=3) != (sequences, sources)


def test_the_replacement_probability_is_that_fraction_of_words(tokenizer):
    from kron_transformers.augmentation import replace_words

    torch = pytest.importorskip("torch")
    embeddings = torch.randn(len(tokenizer), 8, generator=torch.Generator().manual_seed(0))
    input_ids = tokenizer(["the good film is a fun one and the plot is tight"] * 50)["input_ids"]
    sequences, _ = replace_words(input_ids, tokenizer, embeddings, 200, probability=0.25, seed=0)
    changed = sum(new != old for ids in sequences for new, old in zip(ids, input_ids[0]))
    words = sum(len(ids) - 2 for ids in sequences)  # every text token is a one-token word here
    assert 0.20 < changed / words < 0.30


@pytest.mark.parametrize("kwargs, message", [
    ({"count": -1}, "count must be >= 0; got -1"),
    ({"probability": 0.0}, r"probability must be in \(0, 1\]; got 0.0"),
    ({"probability": 1.5}, r"probability must be in \(0, 1\]; got 1.5"),
    ({"candidates": 0}, "candidates must be >= 1; got 0"),
])
def test_replace_words_names_bad_arguments(tokenizer, kwargs, message):
    from kron_transformers.augmentation import replace_words

    torch = pytest.importorskip("torch")
    embeddings = torch.randn(len(tokenizer), 8)
    input_ids = tokenizer(["a good film"])["input_ids"]
    with pytest.raises(ValueError, match=message):
        replace_words(input_ids, tokenizer, embeddings, **{"count": 3, **kwargs})
    with pytest.raises(ValueError, match=r"must be \(vocabulary, hidden\); got shape \(30\,\)"):
        replace_words(input_ids, tokenizer, torch.randn(30), 3)
    with pytest.raises(ValueError, match="outside the embeddings' 100 rows"):
        replace_words(input_ids, tokenizer, torch.randn(100, 8), 3)
    assert replace_words(input_ids, tokenizer, embeddings, 0) == ([], [])


def test_byte_level_bpe_words_are_told_by_their_word_start_marker():
    """GPT-2's vocabulary marks word starts with "Ġ": "Ġgood" is a one-token word, "ing" continues one."""
    import kron_transformers
    from kron_transformers.augmentation import replace_words

    torch = pytest.importorskip("torch")
    try:
        gpt2 = kron_transformers.load_gpt2_tokenizer()
    except OSError as error:
        pytest.skip(f"GPT-2 tokenizer unavailable: {error}")
    embeddings = torch.randn(len(gpt2), 8, generator=torch.Generator().manual_seed(0))
    input_ids = gpt2([" a good film, 1999 , the Kroneckerish boring ending"])["input_ids"]
    pieces = gpt2.convert_ids_to_tokens(input_ids[0])
    sequences, _ = replace_words(input_ids, gpt2, embeddings, 20, probability=1.0, candidates=3, seed=0)
    for position, piece in enumerate(pieces):
        following = pieces[position + 1] if position + 1 < len(pieces) else "Ġ"
        continues = following.isalpha() and not following.startswith("Ġ")
        whole_word = piece.startswith("Ġ") and piece[1:].isalpha() and not continues
        new = {ids[position] for ids in sequences}
        if whole_word:  # replaced every time, by words that start with "Ġ" too
            assert input_ids[0][position] not in new
            assert all(gpt2.convert_ids_to_tokens(token).startswith("Ġ") for token in new)
        else:  # punctuation, numbers, and the pieces of words of several tokens
            assert new == {input_ids[0][position]}
    assert any(not piece.startswith("Ġ") and piece.isalpha() for piece in pieces)  # a continuation piece is there
