"""Races at equal wall-clock: a sweep with ``recipe:`` expands into the baseline's and the
recipe's LR sweeps and the recipe minus each part (lm.training.grid), the best of each LR
sweep is chosen on the whole-split validation loss (lm race-choice), and the report gives
the losses and bits/byte at the budget and each part's contribution (lm sweep-report).
The end-to-end test runs a race of seconds through the real `snakemake`, typed as the docs
type it (`snakemake results/sweeps/RACE/report.md --configfile local.yaml`), on a copy of
the checkout and tiny generated text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import MICRO_MODEL, copy_checkout, snakemake
from writeup_checks import check_writeup, sections

from lm.errors import LMError
from lm.provenance import flatten
from lm.training import resolve_runs, sweep_members
from lm.training.grid import race_ablations, race_lr_members
from lm.writeup import write_writeup


def race_config(budget=0.05) -> dict:
    return {
        "datasets": {"d": {"tokenizer": {"vocab_size": 300}}},
        "models": {"micro": MICRO_MODEL},
        "runs": {
            "base": {
                "dataset": "d",
                "model": {"preset": "micro"},
                "optimizer": {"lr": 1e-2},
                "training": {"max_wallclock_minutes": budget, "batch_size": 4},
            }
        },
        "sweeps": {
            "r": {
                "base": "base",
                "grid": {"optimizer.lr": [1e-3, 1e-2]},
                "recipe": {
                    "grid": {"optimizer.muon_lr": [0.01, 0.02]},
                    "parts": {
                        "muon": {"optimizer.name": "muon"},
                        "wsd": {"schedule.name": "wsd", "schedule.decay_fraction": 0.3},
                        "relu2": {"model.ffn": "relu2"},
                    },
                },
            }
        },
    }


def test_a_race_expands_into_two_lr_sweeps_and_the_recipe_minus_each_part():
    cfg = race_config()
    runs = resolve_runs(cfg)
    assert sweep_members(cfg, "r") == [
        "r-baseline-lr1e-3",
        "r-baseline-lr1e-2",
        "r-recipe-muonlr1e-2",
        "r-recipe-muonlr2e-2",
        "r-minus-muon-muonlr1e-2",
        "r-minus-muon-muonlr2e-2",
        "r-minus-wsd-muonlr1e-2",
        "r-minus-wsd-muonlr2e-2",
        "r-minus-relu2-muonlr1e-2",
        "r-minus-relu2-muonlr2e-2",
    ]
    assert race_lr_members(cfg, "r") == sweep_members(cfg, "r")[:4]
    assert race_ablations(cfg, "r", "r-recipe-muonlr2e-2") == [
        "r-minus-muon-muonlr2e-2",
        "r-minus-wsd-muonlr2e-2",
        "r-minus-relu2-muonlr2e-2",
    ]
    base = runs["base"]
    recipe = runs["r-recipe-muonlr2e-2"]
    assert (recipe.optimizer.name, recipe.schedule.name, recipe.model.ffn) == (
        "muon",
        "wsd",
        "relu2",
    )
    assert recipe.schedule.decay_fraction == 0.3 and recipe.optimizer.muon_lr == 0.02
    baseline = runs["r-baseline-lr1e-3"]
    assert (baseline.optimizer.name, baseline.schedule.name, baseline.model.ffn) == (
        base.optimizer.name,
        base.schedule.name,
        base.model.ffn,
    )
    assert baseline.optimizer.lr == 1e-3
    no_wsd = runs["r-minus-wsd-muonlr2e-2"]
    assert no_wsd.schedule.name == base.schedule.name
    assert no_wsd.schedule.decay_fraction == base.schedule.decay_fraction
    assert (no_wsd.optimizer.name, no_wsd.model.ffn) == ("muon", "relu2")
    for name in sweep_members(cfg, "r"):
        assert runs[name].training.max_wallclock_minutes == 0.05
    assert runs["r-minus-relu2-muonlr1e-2"].sweep["race"] == {
        "role": "ablation",
        "without": "relu2",
        "parts": ["muon", "wsd", "relu2"],
        "grid": ["optimizer.muon_lr"],
    }
    assert runs["r-baseline-lr1e-2"].sweep["race"]["grid"] == ["optimizer.lr"]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c["runs"]["base"]["training"].update(max_wallclock_minutes=None, steps=100),
            "equal wall-clock",
        ),
        (
            lambda c: c["sweeps"]["r"]["recipe"]["parts"].update(ffn2={"model.ffn": "silu"}),
            "both set 'model.ffn'",
        ),
        (
            lambda c: c["sweeps"]["r"]["recipe"]["parts"].update(lr={"optimizer.muon_lr": 0.1}),
            "recipe.grid sweeps 'optimizer.muon_lr'",
        ),
        (lambda c: c["sweeps"]["r"]["recipe"]["parts"].update(none={}), "changes nothing"),
        (
            lambda c: c["sweeps"]["r"]["recipe"]["parts"].update(
                long={"training.max_wallclock_minutes": 1}
            ),
            "changes the budget",
        ),
        (lambda c: c["sweeps"]["r"]["recipe"].update(part={}), "unknown key 'part'"),
        (lambda c: c["sweeps"]["r"].update(variants={"a": {}}), "unknown key 'variants'"),
    ],
)
def test_a_race_that_would_not_compare_like_with_like_is_refused(change, message):
    cfg = race_config()
    change(cfg)
    with pytest.raises(LMError, match=message):
        resolve_runs(cfg)


def test_ablations_need_a_recipe_member():
    with pytest.raises(LMError, match="not a recipe member"):
        race_ablations(race_config(), "r", "r-baseline-lr1e-3")


# ---------------------------------------------------------------------------- end to end

#: A race of seconds as a user's local.yaml would add one: the shipped CPU race's base run
#: shrunk to the micro model on tiny generated text, 3 s a member, two LRs for the baseline,
#: one point for the recipe, two parts.
PARTS = {"muon": {"optimizer.name": "muon"}, "relu2": {"model.ffn": "relu2"}}
LOCAL = {
    "datasets": {
        "owt-cpu": {
            "train": {"generate": {"documents": 60, "seed": 0}},
            "valid": {"generate": {"documents": 6, "seed": 1}},
            "tokenizer": {"vocab_size": 300},
        }
    },
    "models": {"race-cpu": {**MICRO_MODEL, "context_length": 32}},
    "runs": {
        "race-cpu-base": {
            "threads": 1,
            "training": {
                "max_wallclock_minutes": 0.05,
                "batch_size": 4,
                "eval_every": 20,
                "eval_batches": 2,
            },
        }
    },
    "sweeps": {
        "tiny-race": {
            "base": "race-cpu-base",
            "grid": {"optimizer.lr": [1e-3, 1e-2]},
            "recipe": {
                "grid": {"optimizer.muon_lr": [0.02], "optimizer.lr": [1e-2]},
                "parts": PARTS,
            },
        }
    },
    "evaluation": {"batch_size": 4},
}


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_a_race_runs_through_snakemake_and_reports_each_part(tmp_path, monkeypatch):
    root = copy_checkout(tmp_path / "clone")
    (root / "local.yaml").write_text(yaml.safe_dump(LOCAL, sort_keys=False))
    target = "results/sweeps/tiny-race/report.md"
    dry = snakemake(root, "-n", target, "--configfile", "local.yaml", check=True)
    assert "race_choice" in dry.stdout
    snakemake(root, target, "--configfile", "local.yaml", "--cores", "2", check=True)

    out = root / "results/sweeps/tiny-race"
    report = _json(out / "report.json")
    parts = PARTS
    assert report["parts"] == list(parts)
    runs = {r["run"]: r for r in report["runs"]}

    # every member trained under the one budget, on the one dataset
    configs = {name: _json(root / f"results/runs/{name}/config.json") for name in runs}
    for name, c in configs.items():
        assert c["training"]["max_wallclock_minutes"] == 0.05, name
        result = _json(root / f"results/runs/{name}/result.json")
        assert result["wallclock_s"] <= 0.05 * 60 * 1.25, (name, result["wallclock_s"])

    # the tuned baseline and the recipe: the lowest whole-split loss of each LR sweep
    def evals(prefix):
        return {
            n: _json(root / f"results/runs/{n}/eval.json")["loss"]
            for n in runs
            if n.startswith(prefix)
        }

    baselines, recipes = evals("tiny-race-baseline-"), evals("tiny-race-recipe-")
    assert sorted(baselines) == ["tiny-race-baseline-lr1e-2", "tiny-race-baseline-lr1e-3"]
    assert list(recipes) == ["tiny-race-recipe-muonlr2e-2-lr1e-2"]
    assert report["baseline"]["run"] == min(baselines, key=baselines.get)
    assert report["recipe"]["run"] == min(recipes, key=recipes.get)
    choice = _json(out / "choice.json")
    assert (choice["baseline"], choice["recipe"]) == (
        report["baseline"]["run"],
        report["recipe"]["run"],
    )

    # each ablation is the recipe minus exactly one part: the part's keys back at the
    # base run's values, everything else as in the recipe
    recipe = flatten(configs[report["recipe"]["run"]])
    base = flatten(configs[report["baseline"]["run"]])
    assert [c["part"] for c in report["contributions"]] == list(parts)
    for c in report["contributions"]:
        ablation = flatten(configs[c["run"]])
        differ = {
            k
            for k in set(recipe) | set(ablation)
            if recipe.get(k) != ablation.get(k)
            and k != "name"
            and not k.startswith(("sweep.", "resources."))
        }
        part_keys = set(parts[c["part"]])
        assert differ == part_keys, (c["part"], differ)
        for k in part_keys:
            assert ablation.get(k) == base.get(k), (c["part"], k)
        own = _json(root / f"results/runs/{c['run']}/eval.json")
        full = _json(root / f"results/runs/{report['recipe']['run']}/eval.json")
        assert c["bits_per_byte"] == own["bits_per_byte"]
        assert math.isclose(c["bpb_contribution"], own["bits_per_byte"] - full["bits_per_byte"])
        assert math.isclose(c["loss_contribution"], own["loss"] - full["loss"])

    # bits/byte at the budget and the headline against the baseline
    b, r = report["baseline"], report["recipe"]
    for row in (b, r):
        ev = _json(root / f"results/runs/{row['run']}/eval.json")
        assert row["bits_per_byte"] == ev["bits_per_byte"]
        assert math.isclose(ev["bits_per_byte"], ev["loss"] / math.log(2) / ev["bytes_per_token"])
    assert math.isclose(report["bits_per_byte_gain"], 1 - r["bits_per_byte"] / b["bits_per_byte"])

    md = (out / "report.md").read_text()
    for c in report["contributions"]:
        assert f"`{c['run']}`" in md and f"{c['bpb_contribution']:+.4f}" in md
    assert f"{b['bits_per_byte']:.4f}" in md and f"{r['bits_per_byte']:.4f}" in md
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "summary.csv").read_text().splitlines()) == 1 + len(runs)
    # only the ablations at the recipe's best point were trained
    trained = {p.name for p in (root / "results/runs").iterdir() if (p / "result.json").exists()}
    assert trained == set(runs)

    # the writeup's leaderboard section reports the race (its run not trained: "not run yet")
    d = "results/sweeps/tiny-race"
    plan = {
        "edition": "full",
        "roles": {
            "leaderboard": {
                "name": "owt-leaderboard",
                "dir": "results/runs/owt-leaderboard",
                "command": "snakemake results/runs/owt-leaderboard/eval.json",
            },
            "race": {
                "name": "tiny-race",
                "report": f"{d}/report.json",
                "curves": f"{d}/curves.png",
                "command": f"snakemake {d}/report.md",
            },
        },
    }
    monkeypatch.chdir(root)
    write_writeup(plan, "results/writeup.md", "results/writeup.json")
    record = check_writeup(root)
    _, found = sections((root / "results/writeup.md").read_text())
    board = next(p for p in record["problems"] if p["key"] == "leaderboard")
    assert board["status"] == "not run" and f"{d}/report.json" in board["sources"]
    text = found["leaderboard"]
    assert f"{b['bits_per_byte']:.4f}" in text and f"{r['bits_per_byte']:.4f}" in text
    for c in report["contributions"]:
        assert f"`{c['part']}`" in text and f"`{c['run']}`" in text
        assert f"{c['bpb_contribution']:+.4f}" in text
    assert "curves.png" in text

    # done: nothing left to do
    again = snakemake(root, "-n", target, "--configfile", "local.yaml", check=True)
    assert "Nothing to be done" in again.stdout + again.stderr
