"""The handout's experiments on OpenWebText: the main run, against the best TinyStories
run per token and per byte, and the leaderboard run with the race of its recipe."""

from __future__ import annotations

from pathlib import Path

from lm.writeup.facts import Section, load
from lm.writeup.problems.experiments_part import best_index
from lm.writeup.problems.spec import Answer, Problem, code, fenced, fill

RUN = (
    ": {params} parameters, {steps} steps, {tokens} tokens in {wallclock_s:,.1f} s. Best "
    "validation loss **{best_val_loss:.4f}** (step {best_val_step})."
)
EVALUATION = (
    "Over the whole validation split ({tokens_predicted} tokens): loss {loss:.4f}, perplexity "
    "{perplexity:.2f}"
)
PER_BYTE = ", {bits_per_byte:.4f} bits per byte ({bytes_per_token:.3f} bytes/token)."


def run(s: Section, a: Answer) -> None:
    """A training run: its result, its evaluation, its curves and a sample; with
    ``compare_with``, against the best run of that sweep role."""
    d, result = Path(a.role["dir"]), a["result"]
    if result.get("status") == "diverged":
        s.add(
            f"Run {code(a.name)} "
            + fill(s, result, "diverged at step {diverged_step}: {diverged_reason!s}.")
        )
    else:
        _finished(s, a, d)
    if a.options.get("compare_with"):
        _against_tinystories(s, a, a.plan["roles"].get(a.options["compare_with"]))


def _finished(s: Section, a: Answer, d: Path) -> None:
    s.add(f"Run {code(a.name)}" + fill(s, a["result"], RUN))
    ev = load(d / "eval.json")
    if ev is not None and ev.get("perplexity") is not None:
        per_byte = ev.has("bits_per_byte") and ev.get("bits_per_byte") is not None
        s.add("", fill(s, ev, EVALUATION) + (fill(s, ev, PER_BYTE) if per_byte else "."))
    if (d / "curves.png").is_file():
        s.figure(str(d / "curves.png"), f"loss curves of {a.name}")
    sam = load(d / "samples.json")
    if sam is not None and sam.get("samples"):
        text = sam.get("samples", 0, "prompt") + sam.get("samples", 0, "completion")
        s.add("", "A sample:", "", *fenced(text))
        s.cite(sam.path)


def _against_tinystories(s: Section, a: Answer, lr: dict | None) -> None:
    """The run's loss against the best run of the learning-rate sweep, per token and per byte."""
    rep = load(lr["report"]) if lr and lr.get("in_edition", True) and lr.get("report") else None
    result = a["result"]
    b = best_index(rep) if rep is not None else None
    if b is None or result.get("best_val_loss") is None:
        return
    higher = result.get("best_val_loss") > rep.get("runs", b, "best_val_loss")
    s.add(
        "",
        f"The best TinyStories run, {code(rep.get('runs', b, 'run'))}, reached "
        f"{s.num(rep, 'runs', b, 'best_val_loss', fmt='.4f')}: the loss on OpenWebText is "
        f"{'higher' if higher else 'lower'}. The datasets and their tokenizers differ, so the "
        "two are losses per token of different tokenizations and compare only roughly.",
    )
    # per byte of text, the figure that compares across tokenizers
    d = Path(a.role["dir"])
    ts = load(d.parent / rep.get("runs", b, "run") / "eval.json")
    owt = load(d / "eval.json")
    if not all(e is not None and e.has("bits_per_byte") for e in (ts, owt)):
        return
    if None in (ts.get("bits_per_byte"), owt.get("bits_per_byte")):
        return
    harder = owt.get("bits_per_byte") > ts.get("bits_per_byte")
    s.add(
        "",
        "Per byte of text: "
        + fill(s, owt, "{bits_per_byte:.4f} bits/byte on OpenWebText ({bytes_per_token:.3f} ")
        + "bytes/token) against "
        + fill(s, ts, "{bits_per_byte:.4f} on TinyStories ({bytes_per_token:.3f} bytes/token)")
        + f": OpenWebText is {'harder' if harder else 'easier'} to predict per byte "
        f"{'as well' if harder == higher else 'although not per token'}.",
    )


MAIN_EXPERIMENT = Problem(
    "main_experiment",
    "Experiment on OpenWebText",
    role="main_experiment",
    kind=run,
    unset="no OpenWebText run: name one in `writeup.main_experiment` of config.yaml.",
    elsewhere="the OpenWebText run {name}",
    needs={"result": ("dir", "result.json")},
    missing="run {name}",
    options={"compare_with": "learning_rate"},
)


def _num(s: Section, rep, *key, fmt: str = ".4f") -> str:
    """A number of the race's report, or a dash where the member has none (diverged)."""
    return "—" if rep.get(*key) is None else s.num(rep, *key, fmt=fmt)


def race(s: Section, plan: dict) -> None:
    """The race behind the leaderboard's recipe (``writeup.race``): the tuned baseline, the
    recipe and the recipe minus each part at one wall-clock budget, from its report.json."""
    role = plan["roles"].get("race") or {}
    if role.get("name") is None or not role.get("in_edition", True):
        return
    rep = load(role["report"])
    s.add("", "### The recipe, raced at equal wall-clock", "")
    if rep is None:
        s.add(
            f"The race {code(role['name'])} that compares the recipe with the tuned baseline "
            f"has not run yet; `{role['command']}` runs it."
        )
        return
    s.add(
        f"Race {code(role['name'])}: every member trained for "
        f"{s.num(rep, 'budget_minutes', fmt='g')} minutes of wall-clock; the tuned baseline "
        "(AdamW and cosine at the best of its learning rates) against the recipe at its best "
        "learning rates, and the recipe without each of its parts, each evaluated over the "
        "whole validation split."
    )
    if rep.get("bits_per_byte_gain") is not None:
        s.add(
            "",
            f"The recipe reaches {s.num(rep, 'recipe', 'bits_per_byte', fmt='.4f')} bits/byte "
            f"against the baseline's {s.num(rep, 'baseline', 'bits_per_byte', fmt='.4f')}: "
            f"{s.num(rep, 'bits_per_byte_gain', fmt='.1f', op='100*x')}% lower "
            "(negative: higher).",
        )
    s.add(
        "",
        "| member | run | val loss (nats/token) | bits/byte | steps |",
        "| --- | --- | ---: | ---: | ---: |",
    )
    for label, key in (("tuned baseline", "baseline"), ("recipe", "recipe")):
        s.add(
            f"| {label} | {code(rep.get(key, 'run'))} | {_num(s, rep, key, 'eval_loss')} "
            f"| {_num(s, rep, key, 'bits_per_byte')} | {_num(s, rep, key, 'steps', fmt=',')} |"
        )
    contributions = rep.get("contributions") or []
    for i, c in enumerate(contributions):
        s.add(
            f"| recipe without {code(c['part'])} | {code(c['run'])} "
            f"| {_num(s, rep, 'contributions', i, 'eval_loss')} "
            f"| {_num(s, rep, 'contributions', i, 'bits_per_byte')} | |"
        )
    if contributions:
        s.add(
            "",
            "What each part is worth, the recipe without it minus the full recipe in bits/byte "
            "(positive: the part helps): "
            + ", ".join(
                f"{code(c['part'])} {_num(s, rep, 'contributions', i, 'bpb_contribution', fmt='+.4f')}"
                for i, c in enumerate(contributions)
            )
            + ".",
        )
    if role.get("curves") and Path(role["curves"]).is_file():
        s.figure(role["curves"], f"validation loss against wall-clock in race {role['name']}")


LEADERBOARD = Problem(
    "leaderboard",
    "Leaderboard",
    role="leaderboard",
    kind=run,
    unset="the leaderboard asks for the lowest OpenWebText validation loss within the "
    "handout's wall-clock budget on one GPU, and this configuration has no budgeted run yet.",
    unset_command=" The closest run, the OpenWebText main experiment, is made by `{command}`.",
    elsewhere="the leaderboard run",
    needs={"result": ("dir", "result.json")},
    missing="run {name}",
    appendix=race,
)

PROBLEMS = (MAIN_EXPERIMENT, LEADERBOARD)
