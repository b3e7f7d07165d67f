"""One function per CS336 assignment-1 problem: its answer, written from the artifacts.

Each function gets a ``Section`` and the plan (see ``lm.writeup``), reads the artifacts the
plan names, and writes the deliverables of the problem with every number through
``Section.num``/``Section.calc``. Connecting sentences are chosen from the numbers (which
is larger, which grew); nothing is typed by hand. An artifact that does not exist yet
gives the "not run yet" line with the command that makes it.
"""

from __future__ import annotations

from pathlib import Path

from lm.writeup.facts import Artifact, Section, load, repeated_trigram_share

# (key, title) in the order of the handout.
PROBLEMS = (
    ("train_bpe_tinystories", "BPE training on TinyStories"),
    ("train_bpe_expts_owt", "BPE training on OpenWebText"),
    ("tokenizer_experiments", "Experiments with tokenizers"),
    ("transformer_accounting", "Transformer LM resource accounting"),
    ("learning_rate_tuning", "Tuning the learning rate (the SGD toy)"),
    ("adamwAccounting", "Resource accounting for training with AdamW"),
    ("learning_rate", "Tune the learning rate"),
    ("batch_size_experiment", "Batch size variations"),
    ("generate", "Generate text"),
    ("layer_norm_ablation", "Remove RMSNorm and train"),
    ("pre_norm_ablation", "Post-norm instead of pre-norm"),
    ("no_pos_emb", "No position embeddings (NoPE)"),
    ("swiglu_ablation", "SwiGLU against SiLU"),
    ("main_experiment", "Experiment on OpenWebText"),
    ("leaderboard", "Leaderboard"),
)


def _code(text) -> str:
    """Inline code, escaping nothing: artifact strings (names, tokens) shown verbatim."""
    text = str(text).replace("\n", "\\n")
    ticks = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _fenced(text: str) -> list[str]:
    """``text`` as a fenced block, the fence longer than any backtick run inside."""
    fence = "```"
    while fence in text:
        fence += "`"
    return [f"{fence}text", text, fence]


def _role_gate(s: Section, role: dict | None, what: str, edition: str, unset: str) -> bool:
    """False (and the section says why) when the role is unset or not in this edition."""
    if role is None or role.get("name") is None:
        s.not_configured(unset, (role or {}).get("command"))
        return False
    if not role.get("in_edition", True):
        s.elsewhere(f"{what} {_code(role['name'])}", role.get("command"), edition)
        return False
    return True


# ---------------------------------------------------------------------------- tokenizers


def _tokenizer_stats(role: dict) -> Artifact | None:
    return load(Path(role["tokenizer"]) / "stats.json")


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


def _bpe_answer(s: Section, role: dict, stats: Artifact, profile_label: str = "**(b)**") -> None:
    name = _code(role["name"])
    s.add(
        "**(a)** Training the byte-level BPE of "
        f"{name} on {s.num(stats, 'corpus_bytes')} bytes ({s.num(stats, 'documents')} documents) "
        f"to a vocabulary of {s.num(stats, 'vocab_size')} tokens ({s.num(stats, 'merges')} merges) "
        f"took **{s.num(stats, 'total_seconds', fmt=',.2f')} s** with "
        f"{s.num(stats, 'workers')} pre-tokenization worker(s). Peak memory (resident set) was "
        f"**{s.num(stats, 'peak_rss_mb', fmt=',.0f')} MiB** in the main process"
        + (
            f" and {s.num(stats, 'peak_rss_workers_mb', fmt=',.0f')} MiB in the largest worker."
            if stats.get("peak_rss_workers_mb")
            else "."
        )
    )
    if stats.get("stopped_early"):
        s.add(
            "",
            f"Training stopped before the requested {s.num(stats, 'vocab_size_requested')} tokens: "
            f"no pair of tokens was left to merge after {s.num(stats, 'merges')} merges.",
        )
    longest = stats.get("longest_tokens")
    if longest:
        t = longest[0]
        s.add(
            "",
            f"The longest token is id {s.num(stats, 'longest_tokens', 0, 'id')}, "
            f"{s.num(stats, 'longest_tokens', 0, 'length_bytes')} bytes: {_code(t['text'])}. "
            f"It is {_longest_token_sense(t['text'])}",
        )
    pre, merge = stats.get("pretokenize_seconds"), stats.get("merge_seconds")
    larger = "pre-tokenization" if pre >= merge else "merging"
    s.add(
        "",
        f"{profile_label} Pre-tokenization took {s.num(stats, 'pretokenize_seconds', fmt=',.2f')} s "
        f"({s.calc('.0f', '100*a/b', (stats, ('pretokenize_seconds',)), (stats, ('total_seconds',)))}% "
        f"of the training time) and merging {s.num(stats, 'merge_seconds', fmt=',.2f')} s "
        f"({s.calc('.0f', '100*a/b', (stats, ('merge_seconds',)), (stats, ('total_seconds',)))}%): "
        f"**{larger}** takes the most time. Pre-tokenization grows with the corpus (every byte "
        "goes through the regex), merging with the number of distinct pre-tokens and merges.",
    )


def train_bpe_tinystories(s: Section, plan: dict) -> None:
    role = plan["roles"].get("tinystories")
    if not _role_gate(
        s,
        role,
        "the TinyStories tokenizer of",
        plan["edition"],
        "no dataset plays TinyStories: name one in `writeup.tinystories` of config.yaml.",
    ):
        return
    stats = _tokenizer_stats(role)
    if stats is None:
        s.missing(f"the tokenizer of {_code(role['name'])}", role["command"])
        return
    _bpe_answer(s, role, stats)


def train_bpe_expts_owt(s: Section, plan: dict) -> None:
    role = plan["roles"].get("owt")
    if not _role_gate(
        s,
        role,
        "the OpenWebText tokenizer of",
        plan["edition"],
        "no dataset plays OpenWebText: name one in `writeup.owt` of config.yaml.",
    ):
        return
    stats = _tokenizer_stats(role)
    if stats is None:
        s.missing(f"the tokenizer of {_code(role['name'])}", role["command"])
        return
    _bpe_answer(s, role, stats, profile_label="Profile:")
    ts = plan["roles"].get("tinystories")
    ts_stats = _tokenizer_stats(ts) if ts and ts.get("name") else None
    if ts_stats is None:
        s.add(
            "", "**(b)** The comparison needs the TinyStories tokenizer, which does not exist yet."
        )
        return
    a, b = _code(ts["name"]), _code(role["name"])
    s.add(
        "",
        f"**(b)** Against the {a} tokenizer ({s.num(ts_stats, 'vocab_size')} tokens, trained on "
        f"{s.num(ts_stats, 'corpus_bytes')} bytes), the {b} tokenizer has "
        f"{s.num(stats, 'vocab_size')} tokens from {s.num(stats, 'corpus_bytes')} bytes; its "
        f"longest token is {s.num(stats, 'longest_tokens', 0, 'length_bytes')} bytes against "
        f"{s.num(ts_stats, 'longest_tokens', 0, 'length_bytes')}.",
    )
    rep = load(plan["roles"].get("tokenizer_experiments", {}).get("report"))
    names = (ts["name"], role["name"])
    if rep is None or not all(
        rep.has("matrix_bytes_per_token", t, u) for t in names for u in names
    ):
        s.add(
            "",
            "How each compresses the other's text is in `tokenizer_experiments` (b) once "
            "both are in the tokenizer experiments.",
        )
        return
    m = "matrix_bytes_per_token"
    own_ts, cross_ts = (rep, (m, ts["name"], ts["name"])), (rep, (m, role["name"], ts["name"]))
    own_owt, cross_owt = (
        (rep, (m, role["name"], role["name"])),
        (rep, (m, ts["name"], role["name"])),
    )
    s.add(
        "",
        f"On {a} text the {b} tokenizer gets {s.calc('.2f', 'x', cross_ts)} bytes/token against "
        f"{s.calc('.2f', 'x', own_ts)} for {a}'s own; on {b} text the {a} tokenizer gets "
        f"{s.calc('.2f', 'x', cross_owt)} against {s.calc('.2f', 'x', own_owt)}. "
        + (
            "Each tokenizer compresses its own training text best."
            if rep.get(*cross_ts[1]) < rep.get(*own_ts[1])
            and rep.get(*cross_owt[1]) < rep.get(*own_owt[1])
            else "A tokenizer does not always compress its own training text best here."
        ),
    )


def tokenizer_experiments(s: Section, plan: dict) -> None:
    role = plan["roles"].get("tokenizer_experiments")
    if not _role_gate(
        s,
        role,
        "the tokenizer experiments",
        plan["edition"],
        "no target names datasets to compare.",
    ):
        return
    rep = load(role["report"])
    if rep is None:
        s.missing("the tokenizer experiments report", role["command"])
        return
    names = list(rep.get("datasets"))
    s.add(
        f"Samples of {s.num(rep, 'sampling', 'documents_per_dataset')} documents per dataset "
        f"(seed {s.num(rep, 'sampling', 'seed')}).",
        "",
        "**(a)** Compression of each tokenizer on its own dataset:",
        "",
        "| dataset | vocabulary | bytes/token |",
        "| --- | ---: | ---: |",
    )
    for n in names:
        s.add(
            f"| {_code(n)} | {s.num(rep, 'datasets', n, 'vocab_size')} | "
            f"{s.num(rep, 'datasets', n, 'own', 'bytes_per_token', fmt='.2f')} |"
        )
    s.add("", "**(b)** Every tokenizer on every dataset's sample (bytes/token):", "")
    s.add(
        "| tokenizer \\ text | " + " | ".join(_code(n) for n in names) + " |",
        "| --- |" + " ---: |" * len(names),
    )
    for t in names:
        cells = [s.num(rep, "matrix_bytes_per_token", t, u, fmt=".2f") for u in names]
        s.add(f"| {_code(t)} | " + " | ".join(cells) + " |")
    if len(names) < 2:
        s.add(
            "",
            "With one dataset there is nothing to cross: the full-scale writeup (`snakemake all`, "
            "then `snakemake writeup`) compares TinyStories and OpenWebText here.",
        )
    for t in names:
        for u in names:
            if t == u:
                continue
            cross = (rep, ("matrix_bytes_per_token", t, u))
            own = (rep, ("matrix_bytes_per_token", u, u))
            worse = rep.get(*cross[1]) < rep.get(*own[1])
            s.add(
                "",
                f"The {_code(t)} tokenizer on {_code(u)} text: {s.calc('.2f', 'x', cross)} bytes/token, "
                f"{s.calc('.0f', '100*|a-b|/b', cross, own)}% {'fewer' if worse else 'more'} than "
                f"{_code(u)}'s own tokenizer ({s.calc('.2f', 'x', own)})"
                + (
                    ": a tokenizer compresses text unlike its training text less well."
                    if worse
                    else "."
                ),
            )
    s.add(
        "", "**(c)** Throughput (one process, a fresh tokenizer, the first bytes of the text):", ""
    )
    for n in names:
        s.add(
            f"- {_code(n)}: {s.num(rep, 'throughput', n, 'bytes_per_s', fmt='.2f', op='x/1e6')} MB/s "
            f"({s.num(rep, 'throughput', n, 'bytes')} bytes in {s.num(rep, 'throughput', n, 'seconds', fmt='.3f')} s); "
            f"the Pile ({s.num(rep, 'pile_bytes', fmt=',.0f', op='x/1e9')} GB) would take "
            f"**{s.num(rep, 'throughput', n, 'pile_time', fmt='')}** at this rate, "
            "divided by the number of processes of `lm encode --workers`."
        )
    s.add("", "**(d)** Token ids are stored as:", "")
    for n in names:
        s.add(f"- {_code(n)}: {s.num(rep, 'datasets', n, 'dtype_reason', fmt='')}.")


# ---------------------------------------------------------------------------- accounting


def _pct(s: Section, art: Artifact, *key) -> str:
    return s.num(art, *key, fmt=".1f", op="100*x") + "%"


def _accounting(plan: dict, s: Section):
    role = plan["roles"].get("accounting")
    if not _role_gate(
        s, role, "the accounting", plan["edition"], "the accounting is not part of any target."
    ):
        return None
    t = load(role["transformer"])
    a = load(role["adamw"])
    if t is None or a is None:
        s.missing("the accounting report", role["command"])
        return None
    return t, a


def transformer_accounting(s: Section, plan: dict) -> None:
    arts = _accounting(plan, s)
    if arts is None:
        return
    t, adamw = arts
    models = t.get("models")
    long_i = next((i for i, e in enumerate(models) if "@ context" in e["name"]), None)
    base_name = models[long_i]["name"].split(" @ ")[0] if long_i is not None else adamw.get("model")
    xl_i = next(
        (i for i, e in enumerate(models) if e["name"] == base_name),
        max(
            (i for i, e in enumerate(models) if "@ context" not in e["name"]),
            key=lambda i: models[i]["parameters"]["total"],
        ),
    )
    xl = models[xl_i]
    X = ("models", xl_i)
    s.add(
        f"**(a)** {_code(xl['name'])} has **{s.num(t, *X, 'parameters', 'total')}** trainable parameters: "
        f"token embeddings {s.num(t, *X, 'parameters', 'token_embeddings')}, attention "
        f"{s.num(t, *X, 'parameters', 'attention')}, FFN {s.num(t, *X, 'parameters', 'ffn')}, norms "
        f"{s.calc(',', 'x', (t, (*X, 'parameters', 'norms')))} + {s.num(t, *X, 'parameters', 'final_norm')}, "
        f"LM head {s.num(t, *X, 'parameters', 'lm_head')}. In `float32` they take "
        f"**{s.num(t, *X, 'fp32_bytes', fmt='.2f', op='x/1e9')} GB**.",
        "",
        f"**(b)** The matrix multiplies of one forward pass of {s.num(t, *X, 'config', 'context_length')} "
        "tokens (one sequence):",
        "",
        "| matmul | shape (m×n)·(n×p) | times | FLOPs | share |",
        "| --- | --- | ---: | ---: | ---: |",
    )
    for j, r in enumerate(xl["matmuls"]):
        R = (*X, "matmuls", j)
        times = f"{s.num(t, *R, 'count')} layers" if r["per"] == "layer" else "once"
        s.add(
            f"| {s.num(t, *R, 'name', fmt='')} | {s.num(t, *R, 'shape', fmt='')} | {times} | "
            f"{s.num(t, *R, 'flops')} | {_pct(s, t, *X, 'flops', 'share_by_matmul', r['name'])} |"
        )
    s.add(
        "",
        f"Total: **{s.num(t, *X, 'flops', 'total', fmt='.2f', op='x/1e12')} TFLOP** per sequence "
        "(a matmul of an m×n by an n×p matrix costs `2·m·n·p` FLOPs).",
    )
    shares = xl["flops"]["share_by_group"]
    order = sorted(shares, key=lambda g: -shares[g])
    s.add(
        "",
        f"**(c)** The {order[0]} matmuls take the most FLOPs, "
        f"{_pct(s, t, *X, 'flops', 'share_by_group', order[0])}; then "
        + ", ".join(f"{g} {_pct(s, t, *X, 'flops', 'share_by_group', g)}" for g in order[1:])
        + ".",
    )
    family = sorted(
        (
            i
            for i, e in enumerate(models)
            if "@ context" not in e["name"]
            and e["config"]["vocab_size"] == xl["config"]["vocab_size"]
            and e["config"]["context_length"] == xl["config"]["context_length"]
        ),
        key=lambda i: models[i]["parameters"]["total"],
    )
    groups = list(shares)
    s.add("", "**(d)** Shares of the forward FLOPs across the model family:", "")
    s.add(
        "| model | parameters | " + " | ".join(groups) + " |",
        "| --- | ---: |" + " ---: |" * len(groups),
    )
    for i in family:
        s.add(
            f"| {_code(models[i]['name'])} | {s.num(t, 'models', i, 'parameters', 'total')} | "
            + " | ".join(_pct(s, t, "models", i, "flops", "share_by_group", g) for g in groups)
            + " |"
        )
    if len(family) >= 2:
        lo, hi = family[0], family[-1]
        moves = []
        for g in groups:
            a, b = (models[k]["flops"]["share_by_group"][g] for k in (lo, hi))
            verb = "grows" if b > a else "shrinks" if b < a else "stays"
            moves.append(
                f"the {g} share {verb} from {_pct(s, t, 'models', lo, 'flops', 'share_by_group', g)} "
                f"to {_pct(s, t, 'models', hi, 'flops', 'share_by_group', g)}"
            )
        s.add(
            "",
            f"From {_code(models[lo]['name'])} to {_code(models[hi]['name'])}: "
            + "; ".join(moves)
            + ". The projections and the FFN grow with d_model² per layer, the attention scores "
            "with context²·d_model and the LM head with d_model only, so a larger model spends "
            "a larger share in the FFN and the projections.",
        )
    if long_i is None:
        s.add(
            "", "**(e)** The accounting has no long-context row (`accounting.long_context` is 0)."
        )
        return
    L = ("models", long_i)
    long_shares = models[long_i]["flops"]["share_by_group"]

    def owner(g):
        return f"the {g}'" if g.endswith("s") else f"the {g}'s"

    ranked = sorted(groups, key=lambda g: -long_shares[g])
    moves = [
        f"{owner(g)} from {_pct(s, t, *X, 'flops', 'share_by_group', g)} to "
        f"{_pct(s, t, *L, 'flops', 'share_by_group', g)}"
        for g in ranked
    ]
    moves[0] = (
        f"{owner(ranked[0])} share of the forward FLOPs goes from "
        f"{_pct(s, t, *X, 'flops', 'share_by_group', ranked[0])} at "
        f"{s.num(t, *X, 'config', 'context_length')} tokens to "
        f"{_pct(s, t, *L, 'flops', 'share_by_group', ranked[0])} at "
        f"{s.num(t, *L, 'config', 'context_length')}"
    )
    moves = "; ".join(moves)
    s.add(
        "",
        f"**(e)** At a context of {s.num(t, *L, 'config', 'context_length')} tokens instead of "
        f"{s.num(t, *X, 'config', 'context_length')}, one forward pass of {_code(xl['name'])} costs "
        f"**{s.num(t, *L, 'flops', 'total', fmt='.2f', op='x/1e12')} TFLOP**, "
        f"{s.calc('.1f', 'a/b', (t, (*L, 'flops', 'total')), (t, (*X, 'flops', 'total')))}x as much. "
        + moves[:1].upper()
        + moves[1:]
        + ". The attention scores are quadratic in the context, everything else linear; the "
        "parameter count does not change.",
    )


def adamw_accounting(s: Section, plan: dict) -> None:
    arts = _accounting(plan, s)
    if arts is None:
        return
    _, a = arts
    mf = ("memory_formula",)
    s.add(
        f"For {_code(a.get('model'))} ({s.num(a, 'parameters')} parameters P), `float32`, decimal GB.",
        "",
        "**(a)** Peak memory of AdamW training, parameters + gradients + the two moments + "
        "activations (the handout's list, each op keeping its output), as a formula in the batch size B:",
        "",
        "```",
        f"memory(B) = {a.get(*mf, 'symbolic_bytes')}",
        "```",
        "",
        f"- parameters {s.num(a, *mf, 'parameters_bytes', fmt='.2f', op='x/1e9')} GB, gradients "
        f"{s.num(a, *mf, 'gradients_bytes', fmt='.2f', op='x/1e9')} GB, optimizer state "
        f"{s.num(a, *mf, 'optimizer_state_bytes', fmt='.2f', op='x/1e9')} GB;",
        f"- activations {s.num(a, *mf, 'activation_bytes_per_example', fmt='.2f', op='x/1e9')} GB per sequence.",
        "",
        f"**(b)** memory(B) = **{s.num(a, *mf, 'evaluated', fmt='')}**, so the largest batch in "
        f"{s.num(a, 'memory_budget_gb', fmt='g')} GB is **{s.num(a, 'largest_batch')}**.",
        "",
        f"**(c)** One AdamW step at batch {s.num(a, 'step_flops', 'batch')} costs "
        f"{s.num(a, 'step_flops', 'total', fmt='.2f', op='x/1e15')} PFLOP: forward "
        f"{s.num(a, 'step_flops', 'forward', fmt='.2f', op='x/1e15')} PFLOP, backward twice that "
        f"({s.num(a, 'step_flops', 'backward', fmt='.2f', op='x/1e15')} PFLOP), and the update "
        f"{s.num(a, 'step_flops', 'optimizer', fmt='.1f', op='x/1e9')} GFLOP:",
        "",
        "```",
        f"FLOPs per step = {a.get('step_flops', 'formula')}",
        "```",
        "",
        f"**(d)** {s.num(a, 'training', 'steps')} steps at batch {s.num(a, 'training', 'batch')} are "
        f"{s.num(a, 'training', 'total_flops', fmt='.3g')} FLOPs. At "
        f"{s.num(a, 'training', 'peak_flops_per_s', fmt='g', op='x/1e12')} TFLOP/s peak and {s.num(a, 'training', 'mfu', fmt='.0f', op='100*x')}% MFU that is "
        f"**{s.num(a, 'training', 'days', fmt=',.0f')} days** on one GPU.",
    )
    s.cite(a.path)


def learning_rate_tuning(s: Section, plan: dict) -> None:
    role = plan["roles"].get("lr_tuning")
    if not _role_gate(
        s, role, "the SGD toy", plan["edition"], "the SGD toy is not part of any target."
    ):
        return
    rep = load(role["report"])
    if rep is None:
        s.missing("the learning-rate toy report", role["command"])
        return
    s.add(
        f"The toy: {s.num(rep, 'problem', fmt='')}, for {s.num(rep, 'iterations')} iterations "
        f"(seed {s.num(rep, 'seed')}):",
        "",
    )
    for i, r in enumerate(rep.get("runs")):
        lr = s.num(rep, "runs", i, "lr", fmt="g")
        if r["outcome"] == "diverges":
            detail = "the loss grows: each step overshoots further" + (
                f" (to {s.num(rep, 'runs', i, 'final_over_initial', fmt='.3g')}x its start)"
                if r.get("final_over_initial") is not None
                else ""
            )
        elif r["outcome"] == "collapses":
            detail = (
                "the loss falls to about zero by iteration "
                f"{s.num(rep, 'runs', i, 'collapsed_at_iteration')}"
            )
        elif r["outcome"] == "decays":
            detail = (
                "the loss falls steadily, to "
                f"{s.num(rep, 'runs', i, 'final_over_initial', fmt='.3g')} of its start"
            )
        else:
            detail = "the loss does not move"
        s.add(f"- lr {lr}: **{r['outcome']}**: {detail}.")
    if role.get("curves") and Path(role["curves"]).is_file():
        s.figure(role["curves"], "loss per iteration of the SGD toy")


# ---------------------------------------------------------------------------- sweeps


def _swept_key(rep: Artifact, suffix: str, fallback: bool = True) -> str | None:
    """The swept key ending in ``suffix`` (else, with ``fallback``, the first swept key)."""
    keys = rep.get("swept")
    first = keys[0] if keys and fallback else None
    return next((k for k in keys if k.split(".")[-1] == suffix), first)


def _loss(s: Section, rep: Artifact, i: int, key: str = "best_val_loss") -> str:
    v = rep.get("runs", i, key)
    return "—" if v is None else s.num(rep, "runs", i, key, fmt=".4f")


def _status(s: Section, rep: Artifact, i: int) -> str:
    r = rep.get("runs", i)
    if r["status"] == "diverged":
        return f"diverged at step {s.num(rep, 'runs', i, 'diverged_step')}"
    return str(r["status"])


def _sweep_table(s: Section, rep: Artifact, key: str | None, label: str) -> None:
    s.add(
        f"| run | {label} | status | best val loss | final val loss | steps | time (s) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    )
    for i, r in enumerate(rep.get("runs")):
        value = s.num(rep, "runs", i, key, fmt="g") if key and r.get(key) is not None else "—"
        s.add(
            f"| {_code(r['run'])} | {value} | {_status(s, rep, i)} | {_loss(s, rep, i)} | "
            f"{_loss(s, rep, i, 'final_val_loss')} | {s.num(rep, 'runs', i, 'steps')} | "
            f"{s.num(rep, 'runs', i, 'wallclock_s', fmt=',.1f')} |"
        )


def _sweep(plan: dict, s: Section, role_name: str, what: str, unset: str):
    role = plan["roles"].get(role_name)
    if not _role_gate(s, role, what, plan["edition"], unset):
        return None, None
    rep = load(role["report"])
    if rep is None:
        s.missing(f"the report of sweep {_code(role['name'])}", role["command"])
        return role, None
    return role, rep


def _best_index(rep: Artifact) -> int | None:
    best = rep.get("best")
    if not best:
        return None
    return next(i for i, r in enumerate(rep.get("runs")) if r["run"] == best["run"])


def learning_rate(s: Section, plan: dict) -> None:
    role, rep = _sweep(
        plan,
        s,
        "learning_rate",
        "the learning-rate sweep",
        "no learning-rate sweep: name one in `writeup.learning_rate` of config.yaml.",
    )
    if rep is None:
        return
    key = _swept_key(rep, "lr")
    s.add(
        f"Sweep {_code(role['name'])}: {s.num(rep, 'runs', op='len')} runs over {_code(key)}.",
        "",
    )
    _sweep_table(s, rep, key, "lr")
    b = _best_index(rep)
    if b is None:
        s.add("", "No run finished without diverging.")
    else:
        s.add(
            "",
            f"**Best:** {_code(rep.get('runs', b, 'run'))} at lr {s.num(rep, 'runs', b, key, fmt='g')}, "
            f"validation loss **{s.num(rep, 'runs', b, 'best_val_loss', fmt='.4f')}** at step "
            f"{s.num(rep, 'runs', b, 'best_val_step')}.",
        )
        ev = load(Path(role["runs"][rep.get("runs", b, "run")]) / "eval.json")
        if ev is not None and ev.get("perplexity") is not None:
            s.add(
                f"Over the whole validation split ({s.num(ev, 'tokens_predicted')} tokens) its loss is "
                f"{s.num(ev, 'loss', fmt='.4f')}, perplexity {s.num(ev, 'perplexity', fmt='.2f')}."
            )
    runs = rep.get("runs")
    ok = [i for i, r in enumerate(runs) if r["status"] == "ok" and r.get(key) is not None]
    bad = [i for i, r in enumerate(runs) if r["status"] == "diverged" and r.get(key) is not None]
    if bad and ok:
        hi = max(ok, key=lambda i: runs[i][key])
        lo = min(bad, key=lambda i: runs[i][key])
        s.add(
            "",
            f"**The edge of stability:** the largest rate that trained is "
            f"{s.num(rep, 'runs', hi, key, fmt='g')} (best loss {_loss(s, rep, hi)}); the smallest "
            f"that diverged is {s.num(rep, 'runs', lo, key, fmt='g')} (at step "
            f"{s.num(rep, 'runs', lo, 'diverged_step')})"
            + (
                f", {s.calc('.3g', 'a/b', (rep, ('runs', lo, key)), (rep, ('runs', b, key)))}x "
                "the best rate. "
                + (
                    "The best rate is the largest that trained: it sits right at the edge."
                    if b == hi
                    else "The best rate lies below the largest rate that trained."
                )
                if b is not None
                else "."
            ),
        )
    elif ok:
        s.add(
            "",
            "No run diverged: the edge lies above the largest rate tried; add a larger rate to "
            "the sweep to find it.",
        )
    if role.get("curves") and Path(role["curves"]).is_file():
        s.figure(role["curves"], f"loss curves of sweep {role['name']}")


def batch_size_experiment(s: Section, plan: dict) -> None:
    role, rep = _sweep(
        plan,
        s,
        "batch_size",
        "the batch-size sweep",
        "no batch-size sweep: name one (a grid over `training.batch_size`) in "
        "`writeup.batch_size` of config.yaml.",
    )
    if rep is None:
        return
    key = _swept_key(rep, "batch_size")
    s.add(
        f"Sweep {_code(role['name'])}: {s.num(rep, 'runs', op='len')} runs over {_code(key)}, "
        "the same token budget for each (fewer steps for larger batches).",
        "",
    )
    _sweep_table(s, rep, key, "batch size")
    b = _best_index(rep)
    if b is not None:
        s.add(
            "",
            f"**Best:** batch {s.num(rep, 'runs', b, key, fmt='g')} "
            f"({_code(rep.get('runs', b, 'run'))}), validation loss "
            f"**{s.num(rep, 'runs', b, 'best_val_loss', fmt='.4f')}** in "
            f"{s.num(rep, 'runs', b, 'steps')} steps and {s.num(rep, 'runs', b, 'wallclock_s', fmt=',.1f')} s.",
        )
    if role.get("curves") and Path(role["curves"]).is_file():
        s.figure(role["curves"], f"loss curves of sweep {role['name']}")


def generate(s: Section, plan: dict) -> None:
    role, rep = _sweep(
        plan,
        s,
        "learning_rate",
        "the learning-rate sweep",
        "no learning-rate sweep to sample from: name one in `writeup.learning_rate`.",
    )
    if rep is None:
        return
    b = _best_index(rep)
    if b is None:
        s.add("Every run of the sweep diverged: there is no model to sample from.")
        return
    best = rep.get("runs", b, "run")
    sam = load(Path(role["runs"][best]) / "samples.json")
    if sam is None or not sam.get("samples"):
        s.missing(
            f"samples of {_code(best)}",
            f"snakemake {role['runs'][best]}/samples.md",
        )
        return
    st = ("settings",)
    sample = sam.get("samples", 0)
    ended = (
        f"stopped at the end-of-text token after {s.num(sam, 'samples', 0, 'new_tokens')} tokens"
        if sample["stopped"] == "special_token"
        else f"reached the limit of {s.num(sam, 'samples', 0, 'new_tokens')} new tokens"
    )
    decoding = (
        "greedy decoding"
        if sam.get(*st, "temperature") == 0
        else f"temperature {s.num(sam, *st, 'temperature', fmt='g')}, top-p {s.num(sam, *st, 'top_p', fmt='g')}"
    )
    text = sample["prompt"] + sample["completion"]
    s.add(
        f"From {_code(best)}, the best run of {_code(role['name'])} (lowest validation loss), "
        f"prompt {_code(sample['prompt'])}, {decoding}, at most "
        f"{s.num(sam, *st, 'max_new_tokens')} new tokens, seed {s.num(sam, *st, 'seed')}:",
        "",
        *_fenced(text),
        "",
        f"The sample {ended}. **Fluency, measured:** "
        f"{s.num(sam, 'samples', 0, 'completion', fmt='.1f', op='100*repeated_trigrams')}% of its "
        "word trigrams repeat an earlier one (a model stuck in a loop repeats whole phrases)",
    )
    ev = load(Path(role["runs"][best]) / "eval.json")
    if ev is not None and ev.get("perplexity") is not None:
        s.lines[-1] += (
            f"; the model's validation perplexity is {s.num(ev, 'perplexity', fmt='.2f')}"
        )
    runs = rep.get("runs")
    ok = [
        i for i, r in enumerate(runs) if r["status"] == "ok" and r.get("best_val_loss") is not None
    ]
    worst = max(ok, key=lambda i: runs[i]["best_val_loss"]) if ok else None
    other = None
    if worst is not None and worst != b:
        other = load(Path(role["runs"][runs[worst]["run"]]) / "samples.json")
    if other is not None and other.get("samples"):
        s.lines[-1] += (
            f". The highest-loss finished run of the sweep, {_code(runs[worst]['run'])} (validation "
            f"loss {s.num(rep, 'runs', worst, 'best_val_loss', fmt='.4f')} against "
            f"{s.num(rep, 'runs', b, 'best_val_loss', fmt='.4f')}), repeats "
            f"{s.num(other, 'samples', 0, 'completion', fmt='.1f', op='100*repeated_trigrams')}% of "
            "its trigrams on the same prompt"
        )
        mine, theirs = (
            repeated_trigram_share(x.get("samples", 0, "completion")) for x in (sam, other)
        )
        s.lines[-1] += (
            ": the lower-loss model repeats itself less."
            if mine < theirs
            else ": repetition does not separate the two here."
        )
    else:
        s.lines[-1] += "."


# ---------------------------------------------------------------------------- ablations

ABLATIONS = {
    "layer_norm_ablation": ("model.norm", "none", "without any RMSNorm"),
    "pre_norm_ablation": ("model.norm", "post", "with post-norm blocks"),
    "no_pos_emb": ("model.position", "nope", "without position embeddings (NoPE)"),
    "swiglu_ablation": ("model.ffn", "silu", "with a SiLU FFN of the same parameter count"),
}
DEFAULTS = {
    "model.norm": ("pre", None),
    "model.position": ("rope", None),
    "model.ffn": ("swiglu", None),
}


def _baseline(runs: list[dict]) -> int | None:
    named = [i for i, r in enumerate(runs) if r.get("variant") == "baseline"]
    if named:
        return named[0]
    plain = [i for i, r in enumerate(runs) if all(r.get(k) in ok for k, ok in DEFAULTS.items())]
    return plain[0] if plain else None


def ablation(key: str):
    swept, value, description = ABLATIONS[key]

    def section(s: Section, plan: dict) -> None:
        role, rep = _sweep(
            plan,
            s,
            "ablations",
            "the ablation sweep",
            "no ablation sweep: name one (variants of `model.norm`, `model.position`, "
            "`model.ffn`) in `writeup.ablations` of config.yaml.",
        )
        if rep is None:
            return
        runs = rep.get("runs")
        base = _baseline(runs)
        members = [i for i, r in enumerate(runs) if r.get(swept) == value]
        if base is None or not members:
            s.not_configured(
                f"sweep {_code(role['name'])} has no "
                + ("baseline run" if base is None else f"run with {_code(swept)} = {_code(value)}")
                + "; add the variant under its `variants:` in config.yaml.",
                role["command"],
            )
            return
        s.add(
            f"Sweep {_code(role['name'])}: the baseline {_code(runs[base]['run'])} against the "
            f"model {description}.",
            "",
            "| run | status | best val loss | final val loss | steps |",
            "| --- | --- | ---: | ---: | ---: |",
        )
        for i in [base, *members]:
            s.add(
                f"| {_code(runs[i]['run'])} | {_status(s, rep, i)} | {_loss(s, rep, i)} | "
                f"{_loss(s, rep, i, 'final_val_loss')} | {s.num(rep, 'runs', i, 'steps')} |"
            )
        for i in members:
            r = runs[i]
            name = _code(r["run"])
            lr_key = _swept_key(rep, "lr", fallback=False)
            lr_note = ""
            if lr_key and lr_key in r and r[lr_key] != runs[base].get(lr_key):
                lr_note = f" (at lr {s.num(rep, 'runs', i, lr_key, fmt='g')})"
            if r["status"] == "diverged":
                s.add(
                    "",
                    f"{name}{lr_note} diverged at step {s.num(rep, 'runs', i, 'diverged_step')}.",
                )
            elif r.get("best_val_loss") is not None and runs[base].get("best_val_loss") is not None:
                diff = r["best_val_loss"] - runs[base]["best_val_loss"]
                s.add(
                    "",
                    f"{name}{lr_note} ends "
                    f"{s.calc('.1f', '100*|a-b|/b', (rep, ('runs', i, 'best_val_loss')), (rep, ('runs', base, 'best_val_loss')))}% "
                    f"{'above' if diff > 0 else 'below'} the baseline's best validation loss "
                    f"({s.calc('+.4f', 'a-b', (rep, ('runs', i, 'best_val_loss')), (rep, ('runs', base, 'best_val_loss')))}).",
                )
        if role.get("curves") and Path(role["curves"]).is_file():
            s.figure(role["curves"], f"loss curves of sweep {role['name']}")

    section.__name__ = key
    return section


# ---------------------------------------------------------------------------- OWT runs


def _run_answer(s: Section, role: dict) -> bool:
    d = Path(role["dir"])
    result = load(d / "result.json")
    if result is None:
        s.missing(f"run {_code(role['name'])}", role["command"])
        return False
    if result.get("status") == "diverged":
        s.add(
            f"Run {_code(role['name'])} diverged at step {s.num(result, 'diverged_step')}: "
            f"{s.num(result, 'diverged_reason', fmt='')}."
        )
        return True
    s.add(
        f"Run {_code(role['name'])}: {s.num(result, 'params')} parameters, "
        f"{s.num(result, 'steps')} steps, {s.num(result, 'tokens')} tokens in "
        f"{s.num(result, 'wallclock_s', fmt=',.1f')} s. Best validation loss "
        f"**{s.num(result, 'best_val_loss', fmt='.4f')}** (step {s.num(result, 'best_val_step')})."
    )
    ev = load(d / "eval.json")
    if ev is not None and ev.get("perplexity") is not None:
        s.add(
            "",
            f"Over the whole validation split ({s.num(ev, 'tokens_predicted')} tokens): loss "
            f"{s.num(ev, 'loss', fmt='.4f')}, perplexity {s.num(ev, 'perplexity', fmt='.2f')}"
            + (
                f", {s.num(ev, 'bits_per_byte', fmt='.4f')} bits per byte "
                f"({s.num(ev, 'bytes_per_token', fmt='.3f')} bytes/token)."
                if ev.has("bits_per_byte") and ev.get("bits_per_byte") is not None
                else "."
            ),
        )
    if (d / "curves.png").is_file():
        s.figure(str(d / "curves.png"), f"loss curves of {role['name']}")
    sam = load(d / "samples.json")
    if sam is not None and sam.get("samples"):
        text = sam.get("samples", 0, "prompt") + sam.get("samples", 0, "completion")
        s.add("", "A sample:", "", *_fenced(text))
        s.cite(sam.path)
    return True


def main_experiment(s: Section, plan: dict) -> None:
    role = plan["roles"].get("main_experiment")
    if not _role_gate(
        s,
        role,
        "the OpenWebText run",
        plan["edition"],
        "no OpenWebText run: name one in `writeup.main_experiment` of config.yaml.",
    ):
        return
    if not _run_answer(s, role):
        return
    lr = plan["roles"].get("learning_rate")
    rep = load(lr["report"]) if lr and lr.get("in_edition", True) and lr.get("report") else None
    result = load(Path(role["dir"]) / "result.json")
    b = _best_index(rep) if rep is not None else None
    if b is None or result.get("best_val_loss") is None:
        return
    higher = result.get("best_val_loss") > rep.get("runs", b, "best_val_loss")
    s.add(
        "",
        f"The best TinyStories run, {_code(rep.get('runs', b, 'run'))}, reached "
        f"{s.num(rep, 'runs', b, 'best_val_loss', fmt='.4f')}: the loss on OpenWebText is "
        f"{'higher' if higher else 'lower'}. The datasets and their tokenizers differ, so the "
        "two are losses per token of different tokenizations and compare only roughly.",
    )
    # per byte of text, the figure that compares across tokenizers
    ts = load(Path(role["dir"]).parent / rep.get("runs", b, "run") / "eval.json")
    owt = load(Path(role["dir"]) / "eval.json")
    if not all(e is not None and e.has("bits_per_byte") for e in (ts, owt)):
        return
    if None in (ts.get("bits_per_byte"), owt.get("bits_per_byte")):
        return
    harder = owt.get("bits_per_byte") > ts.get("bits_per_byte")
    s.add(
        "",
        f"Per byte of text: {s.num(owt, 'bits_per_byte', fmt='.4f')} bits/byte on OpenWebText "
        f"({s.num(owt, 'bytes_per_token', fmt='.3f')} bytes/token) against "
        f"{s.num(ts, 'bits_per_byte', fmt='.4f')} on TinyStories "
        f"({s.num(ts, 'bytes_per_token', fmt='.3f')} bytes/token): OpenWebText is "
        f"{'harder' if harder else 'easier'} to predict per byte "
        f"{'as well' if harder == higher else 'although not per token'}.",
    )


def leaderboard(s: Section, plan: dict) -> None:
    role = plan["roles"].get("leaderboard") or {}
    if role.get("name") is None:
        s.not_configured(
            "the leaderboard asks for the lowest OpenWebText validation loss within the "
            "handout's wall-clock budget on one GPU, and this configuration has no budgeted run "
            "yet. The closest run, the OpenWebText main experiment, is made by "
            f"`{role.get('command')}`."
            if role.get("command")
            else "the leaderboard asks for the lowest OpenWebText validation loss within the "
            "handout's wall-clock budget on one GPU, and this configuration has no budgeted run yet.",
            role.get("command"),
        )
        return
    if not role.get("in_edition", True):
        s.elsewhere("the leaderboard run", role.get("command"), plan["edition"])
        return
    _run_answer(s, role)


SECTIONS = {
    "train_bpe_tinystories": train_bpe_tinystories,
    "train_bpe_expts_owt": train_bpe_expts_owt,
    "tokenizer_experiments": tokenizer_experiments,
    "transformer_accounting": transformer_accounting,
    "learning_rate_tuning": learning_rate_tuning,
    "adamwAccounting": adamw_accounting,
    "learning_rate": learning_rate,
    "batch_size_experiment": batch_size_experiment,
    "generate": generate,
    **{k: ablation(k) for k in ABLATIONS},
    "main_experiment": main_experiment,
    "leaderboard": leaderboard,
}
