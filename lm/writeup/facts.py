"""Numbers with their sources: every number the writeup prints is read here from an artifact.

An ``Artifact`` is a JSON file the pipeline wrote, with the path the writeup cites. A
``Section`` collects the Markdown of one problem; ``Section.num`` looks a value up in an
artifact by its key path, optionally transforms it with one of ``OPS``, formats it with a
format spec, and records the result as a fact: the text printed, the file and key it came
from, the operation and the format. ``writeup.json`` lists every fact, so any number of the
writeup can be traced to (and checked against) the file it came from.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from lm.errors import LMError

Key = tuple  # a path into a JSON document: dict keys and list indices


def _ratio(a, b):
    return a / b


def repeated_trigram_share(text: str) -> float:
    """The share of the word trigrams of ``text`` that repeat an earlier one (0 when it has
    none): a model stuck in a loop repeats whole phrases, fluent text rarely does."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


# Operations a fact may apply to the values it reads. Named, so writeup.json can say which.
OPS = {
    "x": lambda x: x,
    "100*x": lambda x: 100 * x,
    "x/1e6": lambda x: x / 1e6,
    "x/1e9": lambda x: x / 1e9,
    "x/1e12": lambda x: x / 1e12,
    "x/1e15": lambda x: x / 1e15,
    "len": len,
    "a/b": _ratio,
    "100*a/b": lambda a, b: 100 * a / b,
    "a-b": lambda a, b: a - b,
    "100*|a-b|/b": lambda a, b: 100 * abs(a - b) / b,
    "100*repeated_trigrams": lambda text: 100 * repeated_trigram_share(text),
}


class Artifact:
    """A JSON file of the pipeline: its data and the path the writeup cites."""

    def __init__(self, path: str | os.PathLike, data):
        self.path = str(path)
        self.data = data

    def get(self, *key):
        node = self.data
        for k in key:
            try:
                node = node[k]
            except (KeyError, IndexError, TypeError):
                raise LMError(
                    f"{self.path} has no {'/'.join(map(str, key))}: the file is not what this "
                    "version of the pipeline writes; rebuild it (snakemake reruns it when its code changes)"
                ) from None
        return node

    def has(self, *key) -> bool:
        try:
            self.get(*key)
        except LMError:
            return False
        return True


def load(path: str | os.PathLike | None) -> Artifact | None:
    """The artifact at ``path``, or None when it does not exist (yet)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return Artifact(path, json.loads(p.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise LMError(f"{p} is not readable JSON ({e}); rebuild it") from None


@dataclass
class Section:
    """One problem of the writeup: its Markdown lines and the facts and files they cite."""

    key: str
    title: str
    out_dir: Path
    lines: list[str] = field(default_factory=list)
    facts: list[dict] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    status: str = "answered"  # answered | not run | not configured | not in this edition
    command: str | None = None

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def cite(self, path: str) -> None:
        if path not in self.sources:
            self.sources.append(path)

    def calc(self, fmt: str, op: str, *refs: tuple[Artifact, Key]) -> str:
        """``format(OPS[op](*values), fmt)`` of the values at ``refs``, recorded as a fact."""
        values = [art.get(*key) for art, key in refs]
        value = OPS[op](*values)
        if isinstance(value, float) and not math.isfinite(value):
            text = str(value)
        else:
            text = format(value, fmt)
        self.facts.append(
            {
                "text": text,
                "inputs": [{"source": art.path, "key": list(key)} for art, key in refs],
                "op": op,
                "format": fmt,
            }
        )
        for art, _ in refs:
            self.cite(art.path)
        return text

    def num(self, art: Artifact, *key, fmt: str = ",", op: str = "x") -> str:
        """The value at ``key`` of ``art`` (transformed by ``op``), formatted with ``fmt``."""
        return self.calc(fmt, op, (art, key))

    def link(self, path: str, text: str | None = None) -> str:
        """A Markdown link to ``path`` relative to the writeup, its text the cited path."""
        rel = os.path.relpath(path, self.out_dir).replace(os.sep, "/")
        return f"[`{text or path}`]({quote(rel)})"

    def figure(self, path: str, alt: str) -> None:
        """Embed the image at ``path`` (it must exist)."""
        rel = os.path.relpath(path, self.out_dir).replace(os.sep, "/")
        self.figures.append(path)
        self.add("", f"![{alt}]({quote(rel)})")

    def missing(self, what: str, command: str | None) -> None:
        """The "not run yet" answer: what is missing and the command that makes it."""
        self.status = "not run"
        self.command = command
        how = (
            f" `{command}` makes it; the writeup fills this section in on its next run."
            if command
            else ""
        )
        self.add(f"*Not run yet:* {what} does not exist.{how}")

    def elsewhere(self, what: str, command: str | None, edition: str) -> None:
        """A problem this edition (the demo) does not answer: where the full-scale one comes from."""
        self.status = "not in this edition"
        self.command = command
        how = f" `{command}` makes it, and `snakemake writeup` writes it up." if command else ""
        self.add(f"*Not in the {edition}:* {what} is full-scale work.{how}")

    def not_configured(self, text: str, command: str | None = None) -> None:
        """No artifact of the configuration answers the problem: say what to add."""
        self.status = "not configured"
        self.command = command
        self.add(f"*Not configured:* {text}")

    def render(self) -> str:
        lines = [f"## `{self.key}`: {self.title}", "", *self.lines]
        if self.sources:
            lines += ["", "From " + ", ".join(self.link(p) for p in self.sources) + "."]
        return "\n".join(lines).rstrip() + "\n"

    def record(self) -> dict:
        return {
            "key": self.key,
            "title": self.title,
            "status": self.status,
            "command": self.command,
            "sources": self.sources,
            "figures": self.figures,
            "facts": self.facts,
        }
