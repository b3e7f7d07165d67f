"""The handout's Transformer LM part: resource accounting of the forward pass (parameters,
memory, the FLOPs of each matmul, how their shares move with model size and context)."""

from __future__ import annotations

from lm.writeup.facts import Artifact, Section
from lm.writeup.problems.spec import Answer, Problem, code, fill

PARAMETERS = (
    " has **{parameters/total}** trainable parameters: token embeddings "
    "{parameters/token_embeddings}, attention {parameters/attention}, FFN {parameters/ffn}, "
    "norms {parameters/norms} + {parameters/final_norm}, LM head {parameters/lm_head}. In "
    "`float32` they take **{fp32_bytes|x/1e9:.2f} GB**."
)


def _pct(s: Section, art: Artifact, *key) -> str:
    return s.num(art, *key, fmt=".1f", op="100*x") + "%"


def _share(s: Section, t: Artifact, i: int, group: str) -> str:
    """The share of the forward FLOPs of model ``i`` in its ``group`` of matmuls."""
    return _pct(s, t, "models", i, "flops", "share_by_group", group)


def _models(t: Artifact, adamw: Artifact) -> tuple[int, int | None]:
    """The model the accounting is about (the one with a long-context row, else AdamW's,
    else the largest) and its long-context row, if any."""
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
    return xl_i, long_i


def forward_accounting(s: Section, a: Answer) -> None:
    """(a) parameters and memory, (b) the matmuls, (c) the largest share, (d) the family,
    (e) the long context."""
    t = a["transformer"]
    xl_i, long_i = _models(t, a["adamw"])
    xl = t.get("models", xl_i)
    X = ("models", xl_i)
    s.add(
        f"**(a)** {code(xl['name'])}" + fill(s, t, PARAMETERS, *X),
        "",
        fill(
            s,
            t,
            "**(b)** The matrix multiplies of one forward pass of {config/context_length} "
            "tokens (one sequence):",
            *X,
        ),
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
        fill(s, t, "Total: **{flops/total|x/1e12:.2f} TFLOP** per sequence ", *X)
        + "(a matmul of an m×n by an n×p matrix costs `2·m·n·p` FLOPs).",
    )
    shares = xl["flops"]["share_by_group"]
    order = sorted(shares, key=lambda g: -shares[g])
    s.add(
        "",
        f"**(c)** The {order[0]} matmuls take the most FLOPs, {_share(s, t, xl_i, order[0])}; "
        "then " + ", ".join(f"{g} {_share(s, t, xl_i, g)}" for g in order[1:]) + ".",
    )
    _family(s, t, xl, list(shares))
    if long_i is None:
        s.add(
            "", "**(e)** The accounting has no long-context row (`accounting.long_context` is 0)."
        )
        return
    _long_context(s, t, xl_i, long_i, list(shares))


def _family(s: Section, t: Artifact, xl: dict, groups: list[str]) -> None:
    """(d): the shares of every model of ``xl``'s vocabulary and context, small to large."""
    models = t.get("models")
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
    s.add("", "**(d)** Shares of the forward FLOPs across the model family:", "")
    s.add(
        "| model | parameters | " + " | ".join(groups) + " |",
        "| --- | ---: |" + " ---: |" * len(groups),
    )
    for i in family:
        s.add(
            f"| {code(models[i]['name'])} | {s.num(t, 'models', i, 'parameters', 'total')} | "
            + " | ".join(_share(s, t, i, g) for g in groups)
            + " |"
        )
    if len(family) < 2:
        return
    lo, hi = family[0], family[-1]
    moves = []
    for g in groups:
        a, b = (models[k]["flops"]["share_by_group"][g] for k in (lo, hi))
        verb = "grows" if b > a else "shrinks" if b < a else "stays"
        moves.append(f"the {g} share {verb} from {_share(s, t, lo, g)} to {_share(s, t, hi, g)}")
    s.add(
        "",
        f"From {code(models[lo]['name'])} to {code(models[hi]['name'])}: "
        + "; ".join(moves)
        + ". The projections and the FFN grow with d_model² per layer, the attention scores "
        "with context²·d_model and the LM head with d_model only, so a larger model spends "
        "a larger share in the FFN and the projections.",
    )


def _owner(group: str) -> str:
    return f"the {group}'" if group.endswith("s") else f"the {group}'s"


def _long_context(s: Section, t: Artifact, xl_i: int, long_i: int, groups: list[str]) -> None:
    """(e): the cost of the long-context row against the model's own context."""
    X, L = ("models", xl_i), ("models", long_i)
    long_shares = t.get(*L, "flops", "share_by_group")
    ranked = sorted(groups, key=lambda g: -long_shares[g])
    moves = [
        f"{_owner(g)} from {_share(s, t, xl_i, g)} to {_share(s, t, long_i, g)}" for g in ranked
    ]
    moves[0] = (
        f"{_owner(ranked[0])} share of the forward FLOPs goes from "
        f"{_share(s, t, xl_i, ranked[0])} at {s.num(t, *X, 'config', 'context_length')} tokens "
        f"to {_share(s, t, long_i, ranked[0])} at {s.num(t, *L, 'config', 'context_length')}"
    )
    moves = "; ".join(moves)
    s.add(
        "",
        f"**(e)** At a context of {s.num(t, *L, 'config', 'context_length')} tokens instead of "
        f"{s.num(t, *X, 'config', 'context_length')}, one forward pass of "
        f"{code(t.get(*X, 'name'))} costs "
        f"**{s.num(t, *L, 'flops', 'total', fmt='.2f', op='x/1e12')} TFLOP**, "
        f"{s.calc('.1f', 'a/b', (t, (*L, 'flops', 'total')), (t, (*X, 'flops', 'total')))}x as "
        "much. " + moves[:1].upper() + moves[1:] + ". The attention scores are quadratic in the "
        "context, everything else linear; the parameter count does not change.",
    )


ACCOUNTING = dict(
    role="accounting",
    unset="the accounting is not part of any target.",
    elsewhere="the accounting {name}",
    needs={"transformer": ("transformer",), "adamw": ("adamw",)},
    missing="the accounting report",
)

TRANSFORMER_ACCOUNTING = Problem(
    "transformer_accounting",
    "Transformer LM resource accounting",
    kind=forward_accounting,
    **ACCOUNTING,
)

PROBLEMS = (TRANSFORMER_ACCOUNTING,)
