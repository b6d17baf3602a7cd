"""Fixtures shared by several test files."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizer


WORDS = "the a cat dog sat on mat and ran fast slow red big small".split()


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny dense BertForMaskedLM with a WordPiece tokenizer and a model card declaring its licence."""
    folder = tmp_path_factory.mktemp("dense") / "tiny-bert"
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=64)
    BertForMaskedLM(config).save_pretrained(folder)
    vocab = folder.parent / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny BERT\n")
    return folder
