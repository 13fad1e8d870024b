"""The time-budget controller (training/budget.py) with a fake clock, and budgeted train/compare runs whose
clock is a counter: deterministic, nothing here depends on how fast the machine is."""

from __future__ import annotations

import itertools

import pytest

from cnnzoo.training.budget import PROBE_STEPS, BudgetController, BudgetPlan, BudgetTooSmallError, progress_lr_factor


class FakeClock:
    """The run's seconds: advanced by the simulated steps and evaluations, never by the real machine."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def simulate(budget: float, step_s, eval_s: float = 1.0, start: float = 2.0, steps_guess: int = 10_000,
             plan: BudgetPlan | None = None, step: int = 0, clock: FakeClock | None = None, stop_at: int | None = None):
    """Run a controller to its end: ``step_s(t)`` seconds per step at run time t; returns (controller, clock,
    [(step, event)], [lr factor per step])."""
    clock = clock or FakeClock(start)
    plan = plan or BudgetPlan(budget_s=budget, end_step=steps_guess)
    ctl = BudgetController(plan, clock, schedule="linear", warmup_steps=100, step=step, eval_s=eval_s)
    events, lrs = [], []
    while True:
        lrs.append(ctl.lr_factor(step))
        clock.t += step_s(clock.t)
        step += 1
        ev = ctl.after_step(step)
        if ev:
            events.append((step, ev))
            clock.t += eval_s
            ctl.evaluated(step, eval_s)
        if ev == "end" or step == stop_at:
            return ctl, clock, events, lrs, step


def test_progress_schedules_end_at_zero_and_warm_up_linearly() -> None:
    assert progress_lr_factor(0.05, 0.1, "linear") == pytest.approx(0.5)
    assert progress_lr_factor(0.1, 0.1, "linear") == pytest.approx(1.0)
    assert progress_lr_factor(0.55, 0.1, "linear") == pytest.approx(0.5)
    for sched in ("linear", "cosine", "onecycle"):
        assert progress_lr_factor(1.0, 0.1, sched) == pytest.approx(0.0, abs=1e-12)
    assert progress_lr_factor(0.9, 0.0, "step") == pytest.approx(0.01)
    assert progress_lr_factor(0.5, 0.0, "constant") == 1.0


def test_plan_fits_the_budget_at_a_steady_speed() -> None:
    ctl, clock, events, lrs, step = simulate(100.0, lambda t: 0.1)
    assert [e for _, e in events] == ["eval", "eval", "eval", "end"]
    # 2 s before, 4 evaluations of 1 s and the 1 s tail reserved: (100 - 2 - 4 - 1) / 0.1 = 930 steps
    assert step == 930 and ctl.plan.end_step == step
    assert clock.t <= 100.0
    assert lrs[-1] == pytest.approx(0.0, abs=2e-3) and ctl.lr_factor(step) == 0.0
    assert max(lrs) == pytest.approx(1.0, abs=0.02)
    assert ctl.plan.warmup == pytest.approx(100 / ctl.plan.end_step, rel=0.1)  # the recipe's warm-up, in steps


def test_halved_throughput_moves_the_end_smoothly_and_the_budget_holds() -> None:
    ctl, clock, events, lrs, step = simulate(100.0, lambda t: 0.1 if t < 40 else 0.2)
    assert clock.t <= 110.0 and events[-1][1] == "end"
    assert 600 <= step <= 660  # about 380 fast steps, then about 250 slow ones
    jumps = [abs(a - b) for a, b in itertools.pairwise(lrs)]
    assert max(jumps) < 0.02  # no jump in the LR where the plan was re-fitted
    assert lrs[-1] < 0.01


def test_a_slow_start_does_not_spend_the_schedule() -> None:
    """The first steps pay one-off costs: the plan made on them is corrected before it ran far ahead."""
    ctl, clock, events, lrs, step = simulate(100.0, lambda t: 1.0 if t < 3 else 0.1)
    assert ctl.progress(20) < 0.1
    assert clock.t <= 100.0 and step > 850


def test_a_budget_that_cannot_hold_one_step_says_so() -> None:
    with pytest.raises(BudgetTooSmallError, match="past the budget of 5 s"):
        simulate(5.0, lambda t: 10.0)


def test_a_budget_the_final_evaluation_alone_would_overrun_says_so_before_training() -> None:
    """Nothing is trained when the evaluation that scores the run cannot fit: at the start (the estimate), or at
    the first fit (the probe steps were slow); a resumed run finishes what it started."""
    with pytest.raises(BudgetTooSmallError, match="evaluation takes about 40 s here, so the budget of 30 s"):
        BudgetController(BudgetPlan(budget_s=30.0, end_step=100), FakeClock(2.0), schedule="linear",
                         warmup_steps=0, eval_s=40.0)
    with pytest.raises(BudgetTooSmallError, match="at least 93 s"):  # 3 x (20 s spent + 10 s + 1 s tail)
        simulate(30.0, lambda t: 6.0, eval_s=10.0, start=2.0)
    ctl, clock, events, lrs, step = simulate(30.0, lambda t: 4.0, eval_s=10.0, start=2.0)  # 14 s + 11 s fit
    assert events[-1][1] == "end" and clock.t <= 30.0
    with pytest.raises(BudgetTooSmallError, match="about 8.0 s"):  # the caller's evaluation counts too
        BudgetController(BudgetPlan(budget_s=18.0, end_step=100), FakeClock(2.0), schedule="linear",
                         warmup_steps=0, eval_s=8.0, extra_evals=1)
    late = BudgetPlan(budget_s=30.0, end_step=100, fitted=True)
    BudgetController(late, FakeClock(29.0), schedule="linear", warmup_steps=0, step=90, eval_s=5.0)


def test_evaluations_that_would_eat_the_budget_are_dropped_on_the_way() -> None:
    ctl, clock, events, lrs, step = simulate(30.0, lambda t: 0.1, eval_s=3.0)
    assert [e for _, e in events] == ["end"] and clock.t <= 30.0 * 1.1


def test_a_resumed_plan_continues_with_the_budget_already_used() -> None:
    ctl, clock, events, lrs, stopped = simulate(100.0, lambda t: 0.1, stop_at=400)
    saved = BudgetPlan.from_json(ctl.plan.to_json())
    p = ctl.progress(stopped)
    ctl2, clock2, events2, lrs2, step = simulate(100.0, lambda t: 0.1, plan=saved, step=stopped,
                                                 clock=FakeClock(clock.t + 3.0))  # 3 s to start again
    assert lrs2[0] == pytest.approx(ctl.lr_factor(stopped)) and ctl2.progress(stopped + PROBE_STEPS) > p
    assert events2[-1][1] == "end" and clock2.t <= 100.0 and step > 850


def test_ddp_ranks_take_rank_0s_plan() -> None:
    clock = FakeClock(0.0)
    plan = BudgetPlan(budget_s=100.0, end_step=1000)
    rank0 = {2: [500.0, 7.0], 1: [0.0]}  # rank 0's plan (end step, re-fit window); its verdict: time to train
    ctl = BudgetController(plan, clock, schedule="linear", warmup_steps=0, sync=lambda v: rank0[len(v)])
    for s in range(1, PROBE_STEPS + 1):
        clock.t += 1.0  # a slower rank: its own numbers would plan fewer steps
        ctl.after_step(s)
    assert (plan.end_step, plan.refit_every) == (500, 7)


# ------------------------------------------------------------------- budgeted runs on a counter clock
@pytest.fixture
def counter_clock(monkeypatch):
    """The run's elapsed seconds advance 0.01 s per reading: a budgeted run's plan no longer depends on the
    machine (the controller reads the clock once per step, plus at its re-fits)."""
    from cnnzoo.training.state import RunState

    ticks = itertools.count()
    monkeypatch.setattr(RunState, "elapsed", lambda self: self.elapsed_s + 0.01 * next(ticks))
    return ticks


def _budget_run(out, **kw):
    from tests.test_train import QUIET, SmallNet

    from cnnzoo.training import train

    return train(SmallNet(), "digits", batch_size=64, optimizer="sgd", lr=0.05, train_subset=512, seed=3,
                 test_subset=100, out=out, save_every_s=None, **QUIET, **kw)


def test_budgeted_train_ends_its_schedule_at_the_budget(tmp_path, counter_clock) -> None:
    import json

    r = _budget_run(tmp_path / "b", time_budget_s=2.5)
    assert r.stopped is None and r.budget_s == 2.5 and r.config["schedule"] == "linear"
    assert r.final_lr == 0.0 and r.steps > 8  # more than the recipe's first epoch: epochs do not bound it
    assert r.images_seen == 64 * r.steps and r.epochs_seen == pytest.approx(r.steps / 8, abs=1e-3)
    hist = r.history
    assert [h["progress"] for h in hist][-1] == 1.0 and len(hist) >= 2
    assert r.best_epoch == len(hist) and r.best_acc == r.final_acc  # best/ is the model at the schedule's end
    res = json.loads((tmp_path / "b" / "result.json").read_text())
    assert res["budget_s"] == 2.5 and res["images_seen"] == r.images_seen and res["final_lr"] == 0.0


def test_budgeted_run_resumes_its_plan(tmp_path, counter_clock) -> None:
    from cnnzoo.training import checkpoint as ck

    first = _budget_run(tmp_path / "r", time_budget_s=2.5, max_steps=10)
    assert first.stopped == "max_steps" and first.steps == 10
    st, _ = ck.read_state(tmp_path / "r" / "last")
    assert st["budget"]["fitted"] and st["budget"]["end_step"] > 10 and st["elapsed_s"] > 0
    r = _budget_run(tmp_path / "r", resume=True)  # the plan carries the budget
    assert r.stopped is None and r.final_lr == 0.0 and r.budget_s == 2.5 and r.steps > 10


def test_a_budget_too_small_to_train_is_one_line(tmp_path, counter_clock) -> None:
    from cnnzoo.errors import CnnzooError

    with pytest.raises(CnnzooError, match=r"so the budget of 0.001 s leaves no time to train") as e:
        _budget_run(tmp_path / "z", time_budget_s=0.001)
    assert "\n" not in str(e.value)


def test_budgeted_compare_reports_budget_images_and_fractional_epochs(tmp_path, counter_clock) -> None:
    from cnnzoo.comparing.run import AFTER_TRAINING_S, compare

    res = compare(models="lenet5", dataset="digits", budget_minutes=0.1, out=tmp_path / "c",
                  train_subset=256, test_subset=100, progress=False, verbose=False)
    rows = {r["model"]: r for r in res.rows}
    for r in rows.values():
        assert r["status"] == "ok" and r["budget_s"] is not None and r["final_lr"] == 0.0
        assert r["images_seen"] > 0 and r["epochs_seen"] == pytest.approx(r["images_seen"] / 256, abs=1e-3)
    text = res.leaderboard()
    assert "epochs seen" in text and "budget 0.1 min per model" in text and "linear" in text
    # the row's budget, less what its MACs/RF tracing took and the time kept for eval.json and the timing
    assert 0 < rows["lenet5"]["budget_s"] <= 6.0 - AFTER_TRAINING_S
    csv_head = (tmp_path / "c" / "leaderboard.csv").read_text().splitlines()[0]
    assert "images_seen" in csv_head and "epochs_seen" in csv_head and "wall_s" in csv_head
