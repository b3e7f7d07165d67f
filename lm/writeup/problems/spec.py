"""A problem of the handout as data, and the opening every problem shares.

A ``Problem`` names the role of the plan that answers it (see ``lm.writeup``), the artifacts
of that role it reads, the words of its "not configured", "not in this edition" and "not run
yet" lines, and its kind of section: the renderer that writes the answer. ``answer`` runs the
opening once for all of them: the role must be configured and in this edition, and every
artifact must exist; only then does the renderer get them (an ``Answer``).

Renderers write every number through ``Section.num``/``Section.calc``, most of them through
``fill``: a sentence whose ``{key}`` fields are read from an artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter

from lm.writeup.facts import Artifact, Section, load


@dataclass(frozen=True)
class Problem:
    """One problem of the handout and how the writeup answers it."""

    key: str  # the handout's name of the problem
    title: str
    role: str  # the plan's role whose artifacts answer it
    kind: Callable[[Section, Answer], None]  # the renderer of its kind of section
    unset: str  # the "not configured" line: what to add to the configuration
    elsewhere: str  # what the full-scale edition reads, "{name}" the role's name
    # artifact name -> (the role's path field, then the file under it, if any)
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    missing: str = ""  # the "not run yet" subject, "{name}" the role's name
    unset_command: str = ""  # added to ``unset`` when the role still names a command
    options: dict = field(default_factory=dict)  # what the kind of section varies by
    # written after the answer, whatever it was (the leaderboard's race): (section, plan)
    appendix: Callable[[Section, dict], None] | None = None


@dataclass
class Answer:
    """What a renderer gets: its problem, the plan, the role and the role's artifacts."""

    problem: Problem
    plan: dict
    role: dict
    arts: dict[str, Artifact]

    def __getitem__(self, name: str) -> Artifact:
        return self.arts[name]

    @property
    def name(self) -> str:
        return self.role["name"]

    @property
    def options(self) -> dict:
        return self.problem.options


def code(text) -> str:
    """Inline code, escaping nothing: artifact strings (names, tokens) shown verbatim."""
    text = str(text).replace("\n", "\\n")
    ticks = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def fenced(text: str) -> list[str]:
    """``text`` as a fenced block, the fence longer than any backtick run inside."""
    fence = "```"
    while fence in text:
        fence += "`"
    return [f"{fence}text", text, fence]


def fill(s: Section, art: Artifact, template: str, *base, **named) -> str:
    """``template`` with each field read from ``art`` through ``s.num``, in order.

    A field is ``{key/path|op:format}``: the key path below ``base`` (``/`` between keys,
    digits a list index; a leading ``/`` reads from the top of ``art`` instead), an optional
    operation of ``OPS`` and a format spec (default ``,``); ``{key!s}`` shows a string as it
    is. A field named in ``named`` is that text as it is (a name, not a number), or, when it
    is a tuple, that key path below ``base`` (a key known only at run time).
    """
    out = []
    for text, name, fmt, conversion in Formatter().parse(template):
        out.append(text)
        if name is None:
            continue
        path, _, op = name.partition("|")
        given = named.get(path)
        if isinstance(given, str):
            out.append(given)
            continue
        if given is not None:
            key = list(given)
        else:
            key = [int(k) if k.isdigit() else k for k in path.split("/") if k]
        fmt = "" if conversion == "s" else fmt or ","
        start = () if path.startswith("/") else base
        out.append(s.num(art, *start, *key, fmt=fmt, op=op or "x"))
    return "".join(out)


def figure(s: Section, path: str | None, alt: str) -> None:
    """Embed the plot at ``path`` when the plan names one and it exists."""
    if path and Path(path).is_file():
        s.figure(path, alt)


def _artifact_path(role: dict, where: tuple[str, ...]):
    field_name, *under = where
    return Path(role[field_name], *under) if under else role[field_name]


def answer(problem: Problem, s: Section, plan: dict) -> None:
    """Write ``problem``'s section: why it cannot be answered yet, or its answer; then its
    appendix, if it has one."""
    _answer(problem, s, plan)
    if problem.appendix is not None:
        problem.appendix(s, plan)


def _answer(problem: Problem, s: Section, plan: dict) -> None:
    role = plan["roles"].get(problem.role) or {}
    if role.get("name") is None:
        command = role.get("command")
        extra = problem.unset_command.format(command=command) if command else ""
        s.not_configured(problem.unset + extra, command)
        return
    name = code(role["name"])
    if not role.get("in_edition", True):
        s.elsewhere(problem.elsewhere.format(name=name), role.get("command"), plan["edition"])
        return
    arts = {k: load(_artifact_path(role, where)) for k, where in problem.needs.items()}
    if any(a is None for a in arts.values()):
        s.missing(problem.missing.format(name=name), role["command"])
        return
    problem.kind(s, Answer(problem, plan, role, arts))
