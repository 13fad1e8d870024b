"""A wall-clock budget turned into a plan of optimizer steps whose LR schedule ends when the budget does.

Truncating a schedule laid out for N epochs at a time limit scores a slow net mid-schedule, at a high learning
rate; a schedule that decays to its end exactly at the budget does much better (Li, Yumer & Ramanan, "Budgeted
training", ICLR 2020; linear decay to zero is their best at small budgets). :class:`BudgetController` does
that for a run whose speed is only known once it runs, on a machine shared with others:

- the LR is a function of the run's *progress* ``p`` in [0, 1] (:func:`progress_lr_factor`), not of the step;
- after a few probe steps it measures the seconds per step and plans the run's last step (``end_step``) so
  that training, the evaluations still to come and the run's tail end at the budget;
- it re-fits after windows that double in steps up to about :data:`REFIT_FRACTION` of the budget (the first
  steps of a run are slow with one-off costs, and progress made on a wrong plan cannot be taken back): ``p`` runs
  linearly from where it is to 1 at the new ``end_step``, so a slower or faster machine moves the schedule's
  end without a jump in the LR;
- it asks for an evaluation when ``p`` crosses ``k / evals`` (the last one at the end).

Torch-free and clock-injected (``clock()`` returns the run's seconds so far, earlier resumed segments
included), so it is tested with a fake clock. Under DDP ``sync`` makes every rank use rank 0's plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from ..errors import CnnzooError
from .config import MAX_WARMUP_FRACTION as MAX_WARMUP

PROBE_STEPS = 3  # steps timed before the first fit (the first step's one-off costs are not counted)
REFIT_FRACTION = 0.02  # re-fit about this often, as a fraction of the budget
EVALS = 4  # evaluations per budgeted run, the last at the end (the others for the curves)
EVAL_SHARE = 0.2  # at most this share of the time left goes to evaluations on the way
TAIL_S = 1.0  # the run's end besides the last evaluation: result.json, the curves plot


class BudgetTooSmallError(CnnzooError):
    """Not even one optimizer step, or not the final evaluation, fits in the budget."""


def _secs(x: float) -> str:
    """Seconds for a message: a decimal below 10 s."""
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def progress_lr_factor(p: float, warmup: float, schedule: str) -> float:
    """Multiplier of the base LR at progress ``p`` (0 at the first step, 1 at the plan's end).

    Linear warm-up over the first ``warmup`` fraction, then: linear to 0; cosine to 0; step (x0.1 at 50 % and
    75 % of the decay); onecycle (linear up for ``warmup`` or a quarter, then linearly down to 0); constant.
    """
    p = min(max(p, 0.0), 1.0)
    if schedule == "onecycle":
        peak = warmup if warmup > 0 else 0.25
        return p / peak if p < peak else (1.0 - p) / (1.0 - peak)
    if p < warmup:
        return p / warmup
    t = (p - warmup) / max(1.0 - warmup, 1e-12)
    if schedule == "linear":
        return 1.0 - t
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "step":
        return 0.01 if t >= 0.75 else 0.1 if t >= 0.5 else 1.0
    return 1.0


@dataclass
class BudgetPlan:
    """Where a budgeted run is in its plan (saved in every checkpoint, so ``--resume`` continues it)."""

    budget_s: float
    end_step: int  # the planned last step (re-fitted as the run goes)
    fit_step: int = 0  # step of the last fit
    fit_progress: float = 0.0  # progress at that step
    warmup: float = 0.0  # warm-up, as a fraction of progress
    next_eval: int = 1  # the next evaluation is at progress next_eval / evals
    evals: int = EVALS
    refit_every: int = PROBE_STEPS
    fitted: bool = False  # False until the first measured fit
    step_s: float = 0.0  # seconds per step, as last measured
    done: bool = False  # the plan's end was reached and evaluated

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> BudgetPlan:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class BudgetController:
    """The plan of a budgeted run, re-fitted to measured speed (see the module's docstring)."""

    def __init__(self, plan: BudgetPlan, clock: Callable[[], float], *, schedule: str, warmup_steps: float,
                 step: int = 0, eval_s: float = 0.0, extra_evals: int = 0, tail_s: float = TAIL_S,
                 sync: Callable[[list[float]], list[float]] | None = None) -> None:
        """``warmup_steps``: the recipe's warm-up in steps (its fraction of the fitted plan is the warm-up);
        ``step``: the run's step now (a resumed run's); ``eval_s``: the estimated cost of one evaluation with
        its checkpoint; ``extra_evals``: evaluations the caller runs after the run, inside the budget;
        ``sync``: rank 0's numbers for every rank under DDP (re-fits then come only after whole windows of steps;
        in one process also when a window outlasts its share of the budget)."""
        self.plan, self.clock, self.schedule = plan, clock, schedule
        self.warmup_steps, self.eval_s, self.tail_s = float(warmup_steps), float(eval_s), tail_s
        self.sync, self.timed = sync or (lambda v: v), sync is None
        self.extra_evals = int(extra_evals)
        self._mark = (step, clock())  # the window the next fit measures: (step, clock) at its start
        self._segment_start = step
        self._next_fit = step + PROBE_STEPS  # each segment (a resumed one too) measures its own speed first
        if step == 0 and not plan.fitted:
            self.plan.warmup = min(MAX_WARMUP, self.warmup_steps / max(plan.end_step, 1))
            self._check_final_evaluation_fits(self.clock())  # a resumed run finishes what it started

    # ------------------------------------------------------------------------------------- the plan
    def progress(self, step: int) -> float:
        """Progress at ``step``: linear from the last fit to 1 at ``end_step``."""
        pl = self.plan
        if step >= pl.end_step:
            return 1.0
        span = max(pl.end_step - pl.fit_step, 1)
        return min(1.0, pl.fit_progress + (1.0 - pl.fit_progress) * (step - pl.fit_step) / span)

    def lr_factor(self, step: int) -> float:
        """The LR multiplier for the step after ``step`` steps are done."""
        return progress_lr_factor(self.progress(step), self.plan.warmup, self.schedule)

    def _check_final_evaluation_fits(self, now: float) -> None:
        """Raise :class:`BudgetTooSmallError` when what must follow training (the final evaluation, the
        caller's, the tail) no longer fits in the budget: the run would overrun it with nothing trained."""
        must = (1 + self.extra_evals) * self.eval_s + self.tail_s
        if self.sync([float(now + must > self.plan.budget_s)])[0]:  # rank 0's verdict on every rank
            raise BudgetTooSmallError(
                f"one held-out evaluation takes about {_secs(self.eval_s)} s here, so the budget of "
                f"{self.plan.budget_s:.3g} s leaves no time to train ({_secs(now)} s already spent): give a budget "
                f"of at least {_secs(3 * (now + must))} s, or evaluate fewer views (--tta off) or images "
                f"(--test-subset)")

    def evals_left(self) -> int:
        """Evaluations still to come, the final one included."""
        return self.plan.evals - self.plan.next_eval + 1

    def after_step(self, step: int) -> str | None:
        """Call after each optimizer step (``step`` = steps done): ``"eval"`` when an evaluation point was
        crossed, ``"end"`` when the plan is done, else None. Raises :class:`BudgetTooSmallError` when the
        first step of a run already overran the budget."""
        if step == self._segment_start + 1:  # a segment's first step: its one-off costs are not measured
            now = self.clock()
            if self._segment_start == 0 and now > self.plan.budget_s:
                raise BudgetTooSmallError(
                    f"one training step ended {now:.1f} s into the run, past the budget of "
                    f"{self.plan.budget_s:g} s: give a larger budget, or a smaller --batch-size or --img-size")
            self._mark = (step, now)
        if step >= self._next_fit or (self.timed and self.plan.fitted
                                       and self.clock() - self._mark[1] > REFIT_FRACTION * self.plan.budget_s):
            self.refit(step)
        if step >= self.plan.end_step:
            return "end"
        p, crossed = self.progress(step), False
        while self.plan.next_eval < self.plan.evals and p >= self.plan.next_eval / self.plan.evals - 1e-12:
            self.plan.next_eval, crossed = self.plan.next_eval + 1, True
        return "eval" if crossed else None

    def refit(self, step: int) -> None:
        """Measure seconds per step since the mark and plan ``end_step`` so the rest fits the budget."""
        pl = self.plan
        now = self.clock()
        m_step, m_time = self._mark
        if step > m_step:  # the latest window alone: it follows a neighbour's load within one re-fit
            pl.step_s = (now - m_time) / (step - m_step)
        while self.evals_left() > 1 and self.evals_left() * self.eval_s > EVAL_SHARE * (pl.budget_s - now):
            pl.evals -= 1  # evaluations on the way are for the curves: fewer when they would eat the budget
        if not pl.fitted:
            self._check_final_evaluation_fits(now)
        reserve = (self.evals_left() + self.extra_evals) * self.eval_s + self.tail_s
        left = pl.budget_s - now - reserve
        steps_left = max(0, int(left / pl.step_s)) if pl.step_s > 0 else 1
        p = self.progress(step)
        every = max(1, int(REFIT_FRACTION * pl.budget_s / pl.step_s)) if pl.step_s > 0 else PROBE_STEPS
        every = min(every, max(PROBE_STEPS, step - self._segment_start))  # windows double up to that size
        end, every = (int(v) for v in self.sync([float(step + steps_left), float(every)]))
        if not pl.fitted:  # the warm-up's fraction of the first fitted plan
            pl.warmup = min(MAX_WARMUP, self.warmup_steps / max(end, 1))
        pl.fit_step, pl.fit_progress, pl.end_step, pl.refit_every = step, p, max(end, step), every
        pl.fitted = True
        self._mark = (step, now)
        self._next_fit = step + every

    def evaluated(self, step: int, seconds: float) -> None:
        """An evaluation (with its checkpoint) at ``step`` took ``seconds``: the estimate for those to come,
        and the next measurement window starts now (evaluations are not steps)."""
        self.eval_s = seconds if not self.eval_s else max(seconds, 0.5 * (self.eval_s + seconds))
        self._mark = (step, self.clock())
