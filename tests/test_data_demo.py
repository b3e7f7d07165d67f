import collections
import math
import re

import pytest

from lm.data.demo import EOT, generate_stories, write_corpus
from lm.data.text import inspect_text
from lm.errors import LMError


def test_same_seed_same_text_other_seed_other_text():
    a = list(generate_stories(50, seed=7))
    b = list(generate_stories(50, seed=7))
    c = list(generate_stories(50, seed=8))
    assert a == b
    assert a != c


def test_prefix_stable_when_more_documents_asked():
    assert list(generate_stories(10, seed=3)) == list(generate_stories(30, seed=3))[:10]


def test_file_has_one_separator_line_per_document(tmp_path):
    path = tmp_path / "demo.txt"
    summary = write_corpus(path, documents=40, seed=1)
    text = path.read_text(encoding="utf-8")
    assert summary["documents"] == 40
    assert summary["bytes"] == len(text.encode("utf-8"))
    lines = text.split("\n")
    assert lines.count(EOT) == 40
    assert text.endswith(f"\n{EOT}\n")
    docs = [d.strip() for d in text.split(EOT) if d.strip()]
    assert len(docs) == 40
    # no document contains the separator or starts/ends with blank lines
    assert all(EOT not in d for d in docs)
    assert inspect_text(path, progress=False)["documents"] == 40


def test_size_grows_with_documents(tmp_path):
    small = write_corpus(tmp_path / "s.txt", documents=10)["bytes"]
    large = write_corpus(tmp_path / "l.txt", documents=100)["bytes"]
    assert 5 * small < large < 20 * small


def test_rich_enough_to_learn_from():
    docs = list(generate_stories(2000, seed=0))
    words = re.findall(r"[A-Za-z]+", " ".join(docs))
    vocab = collections.Counter(w.lower() for w in words)
    assert len(vocab) > 250  # many distinct words
    assert len(set(docs)) == len(docs)  # no duplicate stories
    assert sum('"' in d for d in docs) > len(docs) // 3  # dialogue
    # varied but far from uniform: unigram entropy well under log2(vocab)
    total = sum(vocab.values())
    entropy = -sum(c / total * math.log2(c / total) for c in vocab.values())
    assert 5 < entropy < math.log2(len(vocab)) - 1


def test_negative_documents_is_an_error():
    with pytest.raises(LMError, match="documents"):
        list(generate_stories(-1))
