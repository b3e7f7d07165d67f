"""Wall-clock budgets (training.max_wallclock_minutes): planning, stopping, resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import micro_run, micro_tokens, write_run

from lm.errors import LMError
from lm.training import budget as wall
from lm.training.clock import WallClock
from lm.training.config import resolve_runs, run_from_file
from lm.training.distributed import SINGLE
from lm.training.loop import train
from lm.training.schedule import get_lr_wsd_schedule

RUN = micro_run(
    "budget-micro",
    eval_every=200,
    log_every=20,
    checkpoint_every=100,
    max_wallclock_minutes=20 / 60,
)
RUN["schedule"] = {"warmup_ratio": 0.1}


def _config(**runs) -> dict:
    return {"runs": {k: {key: v for key, v in r.items() if key != "name"} for k, r in runs.items()}}


def test_budget_replaces_the_length_and_keeps_the_ratio_schedule():
    run = resolve_runs(_config(r=RUN))["r"]
    assert run.training.steps is None
    assert run.schedule.to_dict() == {"warmup_ratio": 0.1, "cosine_cycle_iters": None}
    assert wall.plan_schedule(run, 1000) == {
        "steps": 1000,
        "warmup_iters": 100,
        "cosine_cycle_iters": 1000,
    }
    capped = json.loads(json.dumps(RUN))
    capped["training"]["total_tokens"] = 128 * 50
    assert resolve_runs(_config(r=capped))["r"].training.steps == 50


def test_a_run_without_length_or_budget_is_an_error():
    run = json.loads(json.dumps(RUN))
    del run["training"]["max_wallclock_minutes"]
    with pytest.raises(LMError, match="steps or total_tokens.*max_wallclock_minutes"):
        resolve_runs(_config(r=run))


def test_unbudgeted_schedule_is_unchanged():
    run = json.loads(json.dumps(RUN))
    del run["training"]["max_wallclock_minutes"]
    run["training"]["steps"] = 300
    resolved = resolve_runs(_config(r=run))["r"]
    assert resolved.schedule.to_dict() == {"warmup_iters": 30, "cosine_cycle_iters": 300}
    assert wall.plan_schedule(resolved, 300) == {
        "steps": 300,
        "warmup_iters": 30,
        "cosine_cycle_iters": 300,
    }


def test_plan_steps_fits_steps_evals_and_the_final_save_in_the_budget():
    kw = dict(budget_s=100.0, spent_s=10.0, step_s=0.1, eval_s=1.0, checkpoint_s=0.5)
    steps = wall.plan_steps(**kw, eval_every=100, checkpoint_every=200, max_steps=None)
    # the plan's own cost model: periodic evals and checkpoints, then the final ones
    total = (
        kw["spent_s"]
        + steps * kw["step_s"]
        + steps / 100 * kw["eval_s"]
        + steps / 200 * kw["checkpoint_s"]
        + kw["eval_s"]
        + kw["checkpoint_s"]
    )
    assert total <= kw["budget_s"] * (1 - wall.SAFETY_SHARE)
    assert (
        total + kw["step_s"] + kw["eval_s"] / 100 > kw["budget_s"] * (1 - wall.SAFETY_SHARE) - 0.01
    )
    assert wall.plan_steps(**kw, eval_every=100, checkpoint_every=200, max_steps=50) == 50
    assert (
        wall.plan_steps(**{**kw, "spent_s": 1e6}, eval_every=1, checkpoint_every=1, max_steps=None)
        == 1
    )


def test_time_spent_after_the_last_checkpoint_is_read_back(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        '{"step": 0, "wallclock_s": 1.5}\n{"step": 20, "wallclock_s": 7.25}\n{"step": 4'
    )
    assert wall.spent_before(metrics, 3.0) == 7.25
    assert wall.spent_before(metrics, 9.0) == 9.0
    assert wall.spent_before(tmp_path / "none.jsonl", 2.0) == 2.0


def _budget(seconds, spent=0.0, log_every=10):
    clock = WallClock(spent)
    return wall.Budget(
        seconds, log_every=log_every, clock=clock, dist=SINGLE, device=torch.device("cpu")
    )


def test_calibration_times_steps_after_the_warmup_until_its_cap(monkeypatch):
    calls = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.002)

    # a 1-second budget caps the timed steps at 5% of it, long before MIN_TIMED_S
    timed_steps, timed_s = _budget(1.0).time_steps(step)
    assert len(calls) == wall.WARMUP_STEPS + timed_steps
    assert wall.MAX_CALIBRATION_SHARE * 1.0 <= timed_s < 0.5
    assert timed_s >= 0.002 * timed_steps
    # a long budget: both minimums (the time one shortened for the test)
    monkeypatch.setattr(wall, "MIN_TIMED_S", 0.05)
    calls.clear()
    timed_steps, timed_s = _budget(3600.0).time_steps(step)
    assert timed_steps >= wall.MIN_TIMED_STEPS and timed_s >= 0.05
    assert len(calls) == wall.WARMUP_STEPS + timed_steps


def test_the_plan_of_a_measurement_and_the_stop_rule():
    run = resolve_runs(_config(r=RUN))["r"]
    budget = _budget(20.0, spent=2.0, log_every=20)
    started = time.perf_counter()
    plan = budget.plan(
        run, timed_steps=10, timed_s=0.1, eval_s=0.5, checkpoint_s=0.25, started=started
    )
    steps = wall.plan_steps(
        budget_s=20.0, spent_s=2.0, step_s=0.01, eval_s=0.5, checkpoint_s=0.25,
        eval_every=200, checkpoint_every=100, max_steps=None,
    )  # fmt: skip
    # the clock moved a little between the two plans: a step at most
    assert steps - 1 <= plan["steps"] <= steps
    assert plan == {
        **wall.plan_schedule(run, plan["steps"]),
        "seconds_per_step": 0.01,
        "eval_s": 0.5,
        "calibration_s": plan["calibration_s"],
        "calibration_steps": wall.WARMUP_STEPS + 10,
    }
    assert 0 <= plan["calibration_s"] < 5
    final = {"eval_s": 0.5, "checkpoint_s": 0.25}
    # 2 s spent, 20 steps of 0.01 s to the next check, a final eval and checkpoint: in time
    assert not budget.out_of_time(20, plan, **final)
    assert not _budget(20.0, spent=19.5, log_every=20).out_of_time(21, plan, **final)  # no check
    assert _budget(20.0, spent=19.5, log_every=20).out_of_time(40, plan, **final)
    # the longer of the last and the planned evaluation time is kept back
    late_eval = {"eval_s": 17.9, "checkpoint_s": 0.0}
    assert _budget(20.0, spent=2.0, log_every=20).out_of_time(20, plan, **late_eval)
    assert not _budget(None, spent=1e9).out_of_time(10, plan, **final)  # no budget


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_twenty_second_budget_stops_evaluates_and_resumes_after_a_kill(tmp_path):
    """A 20 s budget: killed after its first checkpoint, resumed by the same command, it
    keeps its plan and the time already spent, stops at the budget with a final eval and
    checkpoint, and its losses are those of an unbudgeted run of the planned length."""
    cfg = write_run(tmp_path / "run.json", RUN)
    train_npy, valid_npy = micro_tokens(tmp_path)
    out = tmp_path / "budget"
    cmd = [
        sys.executable, "-m", "lm", "train", "--config", str(cfg), "--train-tokens", str(train_npy),
        "--valid-tokens", str(valid_npy), "--out", str(out), "--progress", "none",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120

    def logged_past_a_planned_checkpoint() -> bool:
        # step_00000000.pt is written right after the calibration, without the plan; kill
        # once a planned checkpoint exists and a metrics line was written after it (that
        # session tail must count), which leaves 80 steps before the next checkpoint
        steps = [int(p.stem[5:]) for p in (out / "checkpoints").glob("step_*.pt")]
        if not steps or max(steps) == 0 or not (out / "metrics.jsonl").is_file():
            return False
        lines = (out / "metrics.jsonl").read_text().splitlines()
        try:
            return json.loads(lines[-1])["step"] > max(steps)
        except (IndexError, ValueError):
            return False  # a line being written

    while not logged_past_a_planned_checkpoint():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = torch.load(sorted((out / "checkpoints").glob("step_*.pt"))[-1], weights_only=False)
    plan = first["extra"]["loop"]["plan"]
    spent = wall.spent_before(out / "metrics.jsonl", first["extra"]["loop"]["elapsed"])
    assert spent > first["extra"]["loop"]["elapsed"]  # the killed session's tail
    assert plan["steps"] > first["iteration"], "the budget ran out before the kill; retune the test"

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and result["sessions"] == 2
    assert result["max_wallclock_minutes"] == pytest.approx(20 / 60)
    assert result["budget_plan"] == plan  # the plan survives the kill
    assert result["stop_reason"] in ("steps", "budget")
    assert result["steps"] <= plan["steps"]
    if result["stop_reason"] == "steps":
        assert result["steps"] == plan["steps"]
    records = _metrics(out)
    # time: what the first session spent counts; at the check before its last one the run
    # foresaw the next steps and an evaluation within the budget (the stop rule, at any speed)
    assert spent <= result["wallclock_s"]
    window = RUN["training"]["log_every"] * plan["seconds_per_step"]
    passed = [r for r in records[:-1] if r["val_loss"] is None][-1]  # its clock: the check's
    assert passed["wallclock_s"] + window + plan["eval_s"] <= 20 + 0.5  # + the record's write
    # the budget holds to a step or an eval of slack where the machine kept the calibration's
    # pace over the last steps and evaluation; slowed after it (a loaded machine), the stop
    # rule cannot foresee the slower steps
    if records[-1]["wallclock_s"] - records[-2]["wallclock_s"] <= 2 * (window + plan["eval_s"]) + 1:
        assert result["wallclock_s"] <= 20 + 3
    # a final evaluation at the last step, and a final checkpoint
    assert records[-1]["step"] == result["steps"] and records[-1]["val_loss"] is not None
    assert result["final_val_loss"] == records[-1]["val_loss"]
    assert (out / "checkpoints" / "final.pt").is_file()
    assert "planned for the 0.333333-minute budget" in resumed.stdout

    # The same run without a budget, for the planned steps: identical losses, step by step
    # (the calibration left no trace, the resumed plan is the planned schedule).
    fixed = json.loads(json.dumps(RUN))
    del fixed["training"]["max_wallclock_minutes"]
    fixed["training"]["steps"] = plan["steps"]
    ref_cfg = tmp_path / "fixed.json"
    ref_cfg.write_text(json.dumps(fixed))
    ref_out = tmp_path / "fixed"
    ref = train(run_from_file(ref_cfg), train_npy, valid_npy, ref_out, progress=False)
    ref_records = {r["step"]: r for r in _metrics(ref_out)}
    compared = 0
    for r in records:
        if r["step"] in ref_records and r["step"] % RUN["training"]["log_every"] == 0:
            assert r["train_loss"] == ref_records[r["step"]]["train_loss"], r["step"]
            assert r["lr"] == ref_records[r["step"]]["lr"], r["step"]
            compared += 1
    assert compared >= 5
    if result["stop_reason"] == "steps":
        assert result["final_val_loss"] == ref["final_val_loss"]


def test_a_budgeted_wsd_run_decays_to_the_floor_at_its_planned_end(tmp_path):
    """Warmup-stable-decay under a wall-clock budget: the plan fixes the steps, the decay
    takes their last part, and every logged lr is the schedule's at the planned length."""
    spec = micro_run("wsd", eval_every=1000, log_every=1, checkpoint_every=1000)
    spec["training"]["max_wallclock_minutes"] = 4 / 60
    spec["schedule"] = {"warmup_ratio": 0.1, "name": "wsd", "decay_fraction": 0.3}
    run = resolve_runs(_config(r=spec))["r"]
    assert run.schedule.to_dict()["name"] == "wsd"
    out = tmp_path / "out"
    result = train(run, *micro_tokens(tmp_path), out, progress=False)
    plan = result["budget_plan"]
    assert plan["cosine_cycle_iters"] == plan["steps"] >= 20
    records = [r for r in _metrics(out) if r["lr"] is not None]
    assert [r["step"] for r in records] == list(range(1, result["steps"] + 1))
    for r in records:
        want = get_lr_wsd_schedule(
            r["step"], run.optimizer.lr, run.optimizer.min_lr, plan["warmup_iters"],
            plan["steps"], 0.3,
        )  # fmt: skip
        assert r["lr"] == pytest.approx(want, rel=1e-12)
    lrs = [r["lr"] for r in records]
    # the stable part: from the warmup's end to the last 30% of the planned steps, as far as
    # the run went (a slowed machine may stop it by the budget before the plan's end); over a
    # whole plan, 60% of its steps
    reached = min(result["steps"], 0.7 * plan["steps"])
    assert lrs.count(run.optimizer.lr) >= reached - plan["warmup_iters"] - 1
    if result["steps"] == plan["steps"]:
        assert lrs[-1] == pytest.approx(run.optimizer.min_lr)
