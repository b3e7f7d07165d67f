"""Datasets in: downloads, local files, and the built-in demo corpus."""

from lm.data.demo import generate_stories, write_corpus
from lm.data.download import download
from lm.data.sources import fetch, source_kind
from lm.data.text import check_readable, inspect_text

__all__ = [
    "check_readable",
    "download",
    "fetch",
    "generate_stories",
    "inspect_text",
    "source_kind",
    "write_corpus",
]
