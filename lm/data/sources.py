"""Where a dataset split comes from: ``url:``, ``path:`` or ``generate:`` (see config.yaml)."""

from __future__ import annotations

from pathlib import Path

from lm.data.demo import write_corpus
from lm.data.download import download
from lm.errors import LMError

KINDS = ("url", "path", "generate")


def source_kind(source: dict, what: str = "the split") -> str:
    """The one key of ``url``/``path``/``generate`` that ``source`` sets."""
    kinds = [k for k in KINDS if k in source]
    if len(kinds) != 1:
        raise LMError(
            f"{what} must set exactly one of url:, path:, generate: (it sets {kinds or 'none'})"
        )
    return kinds[0]


def fetch(source: dict, out: str | Path, what: str = "the split", progress: bool = True) -> dict:
    """Materialise a ``url:`` or ``generate:`` source at ``out``; returns a summary.

    ``path:`` sources are read in place and never copied, so there is nothing to fetch.
    ``sha256_from`` in a ``url:`` source names the config file its ``sha256`` came from.
    """
    kind = source_kind(source, what)
    if kind == "url":
        summary = download(
            source["url"],
            out,
            source.get("sha256"),
            what=what,
            progress=progress,
            sha256_from=source.get("sha256_from", "config.yaml"),
        )
    elif kind == "generate":
        gen = source["generate"]
        summary = write_corpus(out, documents=int(gen["documents"]), seed=int(gen.get("seed", 0)))
    else:
        raise LMError(
            f"{what} uses path: {source['path']}; it is read in place, so there is nothing to fetch"
        )
    return {"source": kind, **summary}
