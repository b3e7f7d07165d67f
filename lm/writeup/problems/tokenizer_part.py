"""The handout's BPE tokenizer part: training on TinyStories and OpenWebText, and the
tokenizer experiments (compression, cross-compression, throughput, the storage type)."""

from __future__ import annotations

from pathlib import Path

from lm.writeup.facts import Artifact, Section, load
from lm.writeup.problems.spec import Answer, Problem, code, fill

LONGEST = ("longest_tokens", 0)
BPE_TRAINING = (
    " on {corpus_bytes} bytes ({documents} documents) to a vocabulary of {vocab_size} tokens "
    "({merges} merges) took **{total_seconds:,.2f} s** with {workers} pre-tokenization "
    "worker(s). Peak memory (resident set) was **{peak_rss_mb:,.0f} MiB** in the main process"
)
STOPPED_EARLY = (
    "Training stopped before the requested {vocab_size_requested} tokens: no pair of tokens "
    "was left to merge after {merges} merges."
)
THROUGHPUT = (
    "{bytes_per_s|x/1e6:.2f} MB/s ({bytes} bytes in {seconds:.3f} s); the Pile "
    "({/pile_bytes|x/1e9:,.0f} GB) would take **{pile_time!s}** at this rate, divided by the "
    "number of processes of `lm encode --workers`."
)


def _longest_token_sense(text: str) -> str:
    word = text.strip()
    if word.isalpha():
        lead = " with its leading space" if text[:1] == " " else ""
        return (
            f"a whole word{lead}. BPE gives a word one token once the word is frequent in "
            "the training text, so a long frequent word is what one expects: it makes sense."
        )
    if not word:
        return (
            "whitespace only (a run of spaces or newlines): formatted text repeats such runs "
            "often enough to merge them."
        )
    return (
        "not a plain word: a sequence the training text repeats verbatim (boilerplate, "
        "markup or a separator), which BPE merges like any frequent sequence."
    )


def _share(s: Section, art: Artifact, part: str, whole: str) -> str:
    return s.calc(".0f", "100*a/b", (art, (part,)), (art, (whole,)))


def bpe_training(s: Section, a: Answer) -> None:
    """Time and memory of training the tokenizer, its longest token, where the time goes;
    with ``compare_with``, against that role's tokenizer."""
    stats = a["stats"]
    s.add(
        f"**(a)** Training the byte-level BPE of {code(a.name)}"
        + fill(s, stats, BPE_TRAINING)
        + (
            fill(s, stats, " and {peak_rss_workers_mb:,.0f} MiB in the largest worker.")
            if stats.get("peak_rss_workers_mb")
            else "."
        )
    )
    if stats.get("stopped_early"):
        s.add("", fill(s, stats, STOPPED_EARLY))
    longest = stats.get("longest_tokens")
    if longest:
        text = longest[0]["text"]
        s.add(
            "",
            fill(s, stats, "The longest token is id {id}, {length_bytes} bytes: ", *LONGEST)
            + f"{code(text)}. It is {_longest_token_sense(text)}",
        )
    pre, merge = stats.get("pretokenize_seconds"), stats.get("merge_seconds")
    larger = "pre-tokenization" if pre >= merge else "merging"
    compare = a.options.get("compare_with")
    s.add(
        "",
        ("Profile:" if compare else "**(b)**")
        + fill(s, stats, " Pre-tokenization took {pretokenize_seconds:,.2f} s ")
        + f"({_share(s, stats, 'pretokenize_seconds', 'total_seconds')}% of the training time) "
        + fill(s, stats, "and merging {merge_seconds:,.2f} s ")
        + f"({_share(s, stats, 'merge_seconds', 'total_seconds')}%): **{larger}** takes the "
        "most time. Pre-tokenization grows with the corpus (every byte goes through the regex), "
        "merging with the number of distinct pre-tokens and merges.",
    )
    if compare:
        _against(s, a, a.plan["roles"].get(compare))


def _against(s: Section, a: Answer, other: dict | None) -> None:
    """(b) of OpenWebText: its tokenizer against the ``other`` role's (TinyStories)."""
    stats = a["stats"]
    theirs = load(Path(other["tokenizer"], "stats.json")) if other and other.get("name") else None
    if theirs is None:
        s.add(
            "", "**(b)** The comparison needs the TinyStories tokenizer, which does not exist yet."
        )
        return
    ts, owt = code(other["name"]), code(a.name)
    s.add(
        "",
        f"**(b)** Against the {ts} tokenizer ("
        + fill(s, theirs, "{vocab_size} tokens, trained on {corpus_bytes} bytes")
        + f"), the {owt} tokenizer has "
        + fill(s, stats, "{vocab_size} tokens from {corpus_bytes} bytes; its longest token is ")
        + fill(s, stats, "{length_bytes} bytes against ", *LONGEST)
        + fill(s, theirs, "{length_bytes}.", *LONGEST),
    )
    rep = load((a.plan["roles"].get("tokenizer_experiments") or {}).get("report"))
    names = (other["name"], a.name)
    m = "matrix_bytes_per_token"
    if rep is None or not all(rep.has(m, t, u) for t in names for u in names):
        s.add(
            "",
            "How each compresses the other's text is in `tokenizer_experiments` (b) once "
            "both are in the tokenizer experiments.",
        )
        return
    own_ts, cross_ts = (rep, (m, names[0], names[0])), (rep, (m, names[1], names[0]))
    own_owt, cross_owt = (rep, (m, names[1], names[1])), (rep, (m, names[0], names[1]))
    s.add(
        "",
        f"On {ts} text the {owt} tokenizer gets {s.calc('.2f', 'x', cross_ts)} bytes/token against "
        f"{s.calc('.2f', 'x', own_ts)} for {ts}'s own; on {owt} text the {ts} tokenizer gets "
        f"{s.calc('.2f', 'x', cross_owt)} against {s.calc('.2f', 'x', own_owt)}. "
        + (
            "Each tokenizer compresses its own training text best."
            if rep.get(*cross_ts[1]) < rep.get(*own_ts[1])
            and rep.get(*cross_owt[1]) < rep.get(*own_owt[1])
            else "A tokenizer does not always compress its own training text best here."
        ),
    )


def tokenizer_comparison(s: Section, a: Answer) -> None:
    """Every tokenizer of the report on every dataset: compression tables, throughput, dtype."""
    rep = a["report"]
    names = list(rep.get("datasets"))
    s.add(
        fill(
            s,
            rep,
            "Samples of {sampling/documents_per_dataset} documents per dataset "
            "(seed {sampling/seed}).",
        ),
        "",
        "**(a)** Compression of each tokenizer on its own dataset:",
        "",
        "| dataset | vocabulary | bytes/token |",
        "| --- | ---: | ---: |",
    )
    for n in names:
        s.add(
            f"| {code(n)} | "
            + fill(s, rep, "{vocab_size} | {own/bytes_per_token:.2f} |", "datasets", n)
        )
    s.add("", "**(b)** Every tokenizer on every dataset's sample (bytes/token):", "")
    s.add(
        "| tokenizer \\ text | " + " | ".join(code(n) for n in names) + " |",
        "| --- |" + " ---: |" * len(names),
    )
    for t in names:
        cells = [s.num(rep, "matrix_bytes_per_token", t, u, fmt=".2f") for u in names]
        s.add(f"| {code(t)} | " + " | ".join(cells) + " |")
    if len(names) < 2:
        s.add(
            "",
            "With one dataset there is nothing to cross: the full-scale writeup (`snakemake all`, "
            "then `snakemake writeup`) compares TinyStories and OpenWebText here.",
        )
    for t in names:
        for u in names:
            if t != u:
                _cross(s, rep, t, u)
    s.add(
        "", "**(c)** Throughput (one process, a fresh tokenizer, the first bytes of the text):", ""
    )
    for n in names:
        s.add(f"- {code(n)}: " + fill(s, rep, THROUGHPUT, "throughput", n))
    s.add("", "**(d)** Token ids are stored as:", "")
    for n in names:
        s.add(f"- {code(n)}: {s.num(rep, 'datasets', n, 'dtype_reason', fmt='')}.")


def _cross(s: Section, rep: Artifact, t: str, u: str) -> None:
    """The ``t`` tokenizer on ``u``'s text against ``u``'s own tokenizer."""
    cross = (rep, ("matrix_bytes_per_token", t, u))
    own = (rep, ("matrix_bytes_per_token", u, u))
    worse = rep.get(*cross[1]) < rep.get(*own[1])
    s.add(
        "",
        f"The {code(t)} tokenizer on {code(u)} text: {s.calc('.2f', 'x', cross)} bytes/token, "
        f"{s.calc('.0f', '100*|a-b|/b', cross, own)}% {'fewer' if worse else 'more'} than "
        f"{code(u)}'s own tokenizer ({s.calc('.2f', 'x', own)})"
        + (": a tokenizer compresses text unlike its training text less well." if worse else "."),
    )


def _tokenizer(role: str, dataset: str, **extra) -> dict:
    return dict(
        role=role,
        kind=bpe_training,
        unset=f"no dataset plays {dataset}: name one in `writeup.{role}` of config.yaml.",
        elsewhere=f"the {dataset} tokenizer of {{name}}",
        needs={"stats": ("tokenizer", "stats.json")},
        missing="the tokenizer of {name}",
        **extra,
    )


TRAIN_BPE_TINYSTORIES = Problem(
    "train_bpe_tinystories",
    "BPE training on TinyStories",
    **_tokenizer("tinystories", "TinyStories"),
)
TRAIN_BPE_EXPTS_OWT = Problem(
    "train_bpe_expts_owt",
    "BPE training on OpenWebText",
    **_tokenizer("owt", "OpenWebText", options={"compare_with": "tinystories"}),
)
TOKENIZER_EXPERIMENTS = Problem(
    "tokenizer_experiments",
    "Experiments with tokenizers",
    role="tokenizer_experiments",
    kind=tokenizer_comparison,
    unset="no target names datasets to compare.",
    elsewhere="the tokenizer experiments {name}",
    needs={"report": ("report",)},
    missing="the tokenizer experiments report",
)

PROBLEMS = (TRAIN_BPE_TINYSTORIES, TRAIN_BPE_EXPTS_OWT, TOKENIZER_EXPERIMENTS)
