"""The CS336 assignment-1 writeup, regenerated from the pipeline's artifacts.

``write_writeup(plan, out_md, out_json)`` writes ``writeup.md``: one section per problem of
the handout, in its order (``PROBLEMS``), each answering the problem's deliverables from the
artifacts that exist, and ``writeup.json``: every number printed, with the file and key it
was read from (see ``lm.writeup.facts``). A problem whose artifacts do not exist yet says so
and gives the command that makes them.

The plan says which artifact answers which problem. The workflow writes it from the
configuration; the library reads only the paths it names::

    {"edition": "demo" | "full",
     "roles": {
       "tinystories" | "owt": {"name": DATASET, "tokenizer": DIR, "command": CMD, "in_edition": bool},
       "tokenizer_experiments": {"name": TARGET, "report": JSON, "command": CMD},
       "accounting": {"name": "accounting", "transformer": JSON, "adamw": JSON, "command": CMD},
       "lr_tuning": {"name": "lr_tuning", "report": JSON, "curves": PNG, "command": CMD},
       "learning_rate" | "batch_size" | "ablations":
           {"name": SWEEP, "report": JSON, "curves": PNG, "runs": {RUN: DIR}, "command": CMD},
       "main_experiment" | "leaderboard": {"name": RUN, "dir": DIR, "command": CMD},
       "race": {"name": SWEEP, "report": JSON, "curves": PNG, "command": CMD}}}

A role that is null (or has no name) is not configured; ``in_edition: false`` marks a
full-scale problem the demo edition points at without reading it.
"""

from __future__ import annotations

import os
from pathlib import Path

from lm.io import write_json, write_text
from lm.provenance import KEY, render_markdown, with_provenance
from lm.writeup.facts import Section
from lm.writeup.problems import PROBLEMS, answer

__all__ = ["PROBLEMS", "build_sections", "render", "write_writeup"]

STATUS_TEXT = {
    "answered": "answered",
    "not run": "not run yet",
    "not configured": "not configured",
    "not in this edition": "full scale only",
}


def build_sections(plan: dict, out_dir: str | os.PathLike) -> list[Section]:
    """Every problem's section, in the handout's order."""
    sections = []
    for problem in PROBLEMS:
        s = Section(problem.key, problem.title, Path(out_dir))
        answer(problem, s, plan)
        sections.append(s)
    return sections


def _name(plan: dict, role: str) -> str | None:
    r = plan["roles"].get(role) or {}
    return r.get("name") if r.get("in_edition", True) else None


def _banner(plan: dict) -> list[str]:
    ts, lr = _name(plan, "tinystories"), _name(plan, "learning_rate")
    if plan["edition"] == "demo":
        stand_ins = []
        if ts:
            stand_ins.append(f"the demo corpus `{ts}` stands in for TinyStories")
        if lr:
            stand_ins.append(f"the tiny models of sweep `{lr}` for the TinyStories models")
        return [
            "> **Demo scale.** This is the writeup of `snakemake demo`"
            + (": " + " and ".join(stand_ins) if stand_ins else "")
            + ". Its numbers show what each answer looks like, not the assignment's results. "
            "Problems that need OpenWebText or full-scale training say which command makes "
            "their artifacts; `snakemake writeup` writes the full-scale writeup from whatever "
            "full-scale artifacts exist.",
        ]
    owt = _name(plan, "owt")
    data = " and ".join(f"`{d}`" for d in (ts, owt) if d)
    return [
        "> **Full scale.** Written by `snakemake writeup` (and at the end of `snakemake all` and "
        "`snakemake train_all`)"
        + (f" from the datasets {data}" if data else "")
        + ". Sections fill in as their artifacts are built; each missing one gives its command.",
    ]


def render(plan: dict, sections: list[Section], json_name: str = "writeup.json") -> str:
    lines = ["# CS336 assignment 1: the writeup", "", *_banner(plan), ""]
    lines += [
        "Every number below is read from an artifact of the pipeline, cited at the end of its "
        f"section; `{json_name}` beside this file lists each number with the file and key it "
        "came from. Nothing here is typed by hand: rerun the pipeline and this page follows.",
        "",
        "| problem | status |",
        "| --- | --- |",
    ]
    lines += [f"| `{s.key}` | {STATUS_TEXT[s.status]} |" for s in sections]
    for s in sections:
        lines += ["", s.render().rstrip()]
    return "\n".join(lines) + "\n"


def write_writeup(
    plan: dict, out_md: str | os.PathLike, out_json: str | os.PathLike | None = None
) -> dict:
    """Write ``out_md`` (and ``out_json``, the facts); return the JSON record."""
    out_md = Path(out_md)
    sections = build_sections(plan, out_md.parent)
    json_name = Path(out_json).name if out_json else "writeup.json"
    record = {
        "edition": plan["edition"],
        "markdown": str(out_md),
        "problems": [s.record() for s in sections],
    }
    record = with_provenance(record, "writeup")
    write_text(out_md, render(plan, sections, json_name) + "\n" + render_markdown(record[KEY]))
    if out_json:
        write_json(out_json, record)
    return record
