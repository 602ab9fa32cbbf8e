"""Training to a wall-clock budget (``train.time_limit``, ``mspt train --time-limit``): the durations it reads, the
schedule over the elapsed share of the budget, the stop when it is spent, and resume with the time left.

The loop's clock is an argument: the runs below drive it by hand (each optimiser step takes one second), so
they check exact steps and rates without timing anything. The one real run asserts on what it wrote, not on speed.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
import yaml
from helpers import invoke, ok, one_line_error, ranks_said, torchrun

from msptcli.config import load_config
from msptcli.duration import format_duration, parse_duration
from msptcli.errors import ConfigError, OptionError
from msptcli.options import time_limit
from msptcli.train.budget import Budget
from msptcli.train.loop import train_model
from msptcli.train.objective import lr_factor_by_time, schedule
from msptcli.train.state import STATE, load_train_state

pytest_plugins = ["helpers"]


# --- durations ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5400, 5400.0), (0.25, 0.25), ("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("1.5h", 5400.0),
        ("1h30m", 5400.0), ("1h 30m 10s", 5410.0), (" 2M ", 120.0), (".5h", 1800.0), ("1h10s", 3610.0),
    ],
)  # fmt: skip
def test_durations_are_read_in_every_form(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    ["", " ", "abc", "30x", "m", "30m1h", "1h-30m", "-5", "0", "0s", 0, -1, True, "inf", float("nan"), "1e3", [1]],
)
def test_anything_else_is_refused_with_the_accepted_forms(value):
    with pytest.raises(ValueError, match=r"90s, 30m, 1\.5h, 1h30m"):
        parse_duration(value)


@pytest.mark.parametrize("seconds", [0.5, 2.5, 59, 60, 61, 3600, 5410, 2 * 86400 + 7])
def test_printed_durations_read_back(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_the_config_stores_seconds_and_names_the_key():
    config = load_config(values={"train.time_limit": "1h30m"})
    assert config.train.time_limit == 5400.0
    dumped = config.model_dump(mode="json")
    assert dumped["train"]["time_limit"] == 5400.0  # what config.yaml holds: one reading only
    assert load_config(values={"train.time_limit": dumped["train"]["time_limit"]}).train.time_limit == 5400.0
    assert load_config().train.time_limit is None  # no limit unless asked
    with pytest.raises(ConfigError, match=r"^config: train\.time_limit: expected a positive duration.*1h30m"):
        load_config(values={"train.time_limit": "soon"})
    with pytest.raises(OptionError, match=r"^--time-limit 'soon': .*1h30m"):
        time_limit("soon")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--time-limit", "30x"], ["--time-limit '30x'", "90s, 30m, 1.5h, 1h30m"]),
        (["--time-limit", "0"], ["--time-limit '0'", "positive"]),
        (["--set", "train.time_limit=-1"], ["train.time_limit", "90s, 30m, 1.5h, 1h30m"]),
    ],
)
def test_mspt_train_refuses_a_bad_time_limit_in_one_line(tmp_path, args, needles):
    one_line_error(invoke("train", tmp_path / "data", "-o", tmp_path / "run", *args), *needles)
    assert not (tmp_path / "run").exists()


# --- the schedule over the budget ----------------------------------------------------------------------


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_schedule_follows_the_elapsed_share_of_the_budget():
    clock = FakeClock()
    budget = Budget(100.0, clock=clock)
    train = load_config(values={"train.epochs": 10, "train.warmup_epochs": 2, "train.min_lr_ratio": 0.1}).train
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = schedule(optimizer, train, 7, budget)  # steps per epoch play no part
    budget.start()
    for seconds, factor in [(0, 0.0), (10, 0.5), (20, 1.0), (60, 0.55), (100, 0.1), (150, 0.1)]:
        clock.now = seconds
        budget.tick()
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(2.0 * factor), seconds  # warm-up: 2/10 of it
    assert budget.spent and budget.fraction == 1.0 and budget.left == 0.0


def test_the_time_schedule_has_the_shape_of_the_step_schedule():
    factors = [lr_factor_by_time(f / 100, 0.25, 0.01) for f in range(101)]
    assert factors[0] == 0.0 and factors[25] == 1.0 and factors[100] == pytest.approx(0.01)
    assert all(a < b for a, b in pairwise(factors[:26]))  # up while warming
    assert all(a > b for a, b in pairwise(factors[25:]))  # then down to the floor
    assert lr_factor_by_time(0.5, 0.0, 0.0) == pytest.approx(0.5)  # no warm-up: half-way down at half the time
    assert lr_factor_by_time(1.0, 1.0, 0.5) == 1.0  # all warm-up: never decays


def test_the_budget_counts_earlier_sessions_and_agrees_between_ranks():
    clock = FakeClock()
    budget = Budget(10.0, spent=4.0, clock=clock)
    assert budget.agreed == 4.0 and budget.fraction == pytest.approx(0.4) and not budget.spent
    clock.now = 100.0  # the clock before the session starts does not count
    budget.start()
    clock.now = 103.0
    assert budget.elapsed() == 7.0 and budget.agreed == 4.0  # read, not yet agreed
    assert budget.tick(lambda mine: mine + 3.0)  # another rank's clock was further: 10 s spent
    assert budget.left == 0.0 and budget.elapsed() == 10.0  # what the state saves: what stopped the run
    assert not Budget(None, clock=clock).tick() and Budget(None).fraction == 0.0


# --- runs ended by the time limit ----------------------------------------------------------------------


class StepSeconds:
    """A reporter whose every optimiser step takes one second of ``clock``; it keeps the rates the steps used."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.lrs, self.started = clock, [], []

    def begin(self, start) -> None: ...

    def start(self, total_steps: int, done_steps: int, time_limit: float | None, elapsed: float) -> None:
        self.started.append((done_steps, time_limit, elapsed))

    def step(self, loss: float | None, lr: float, elapsed: float) -> None:
        self.lrs.append(lr)
        self.clock.now += 1.0

    def epoch(self, epoch: int, row: dict) -> None: ...


def timed(prepared, seconds: float):
    """The tiny config with a time limit: 2 training cases (2 steps an epoch), validation only every 10 epochs."""
    values = {"train.time_limit": seconds, "train.threads": 1, "train.val_every": 10}
    return load_config(prepared.config, values=values)


def rows(run) -> list[dict[str, str]]:
    import csv

    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def five_seconds(prepared, tmp_path_factory):
    """A run limited to 5 s, each step taking 1 s: it ends after 5 steps, in the middle of its third epoch."""
    run = tmp_path_factory.mktemp("time_limit") / "run"
    clock = FakeClock()
    reporter = StepSeconds(clock)
    summary = train_model(prepared.data, run, config=timed(prepared, 5), reporter=reporter, clock=clock)
    return run, summary, reporter


def test_the_run_ends_when_the_time_is_spent_not_after_its_epochs(five_seconds, prepared):
    run, summary, reporter = five_seconds
    config = timed(prepared, 5)
    assert config.train.epochs == 2  # the tiny config's epochs do not end a time-limited run
    assert summary.time_up and not summary.interrupted and not summary.already_spent
    assert (summary.steps_done, summary.epochs_done, summary.elapsed) == (5, 2, 5.0)
    assert len(reporter.lrs) == 5 and reporter.started == [(0, 5.0, 0.0)]
    # the rate of step i: the schedule at i seconds of 5, warm-up over warmup_epochs / epochs = 1/2 of them
    lr, floor = config.train.lr, config.train.min_lr_ratio
    assert reporter.lrs == pytest.approx([lr * lr_factor_by_time(i / 5, 0.5, floor) for i in range(5)])
    assert (run / "checkpoints" / "best.safetensors").is_file() and (run / "checkpoints" / "last.safetensors").is_file()
    assert (run / "curves.png").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["time_limit"] == 5.0


def test_the_epoch_the_time_ends_is_validated_and_kept_for_resume(five_seconds):
    run, _, _ = five_seconds
    written = rows(run)
    assert [r["epoch"] for r in written] == ["1", "2", "3"]  # the third one step long
    assert [bool(r.get("val_loss")) for r in written] == [False, False, True]  # val_every 10: only the last
    assert float(written[-1]["lr"]) == pytest.approx(timed_floor(run))  # the budget spent: the floor
    state = load_train_state(run / STATE)
    assert (state["epoch"], state["step_in_epoch"], state["elapsed"]) == (2, 1, 5.0)
    assert state["loss_count"] == 1  # the third epoch's running loss, for a resume to finish it


def timed_floor(run) -> float:
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    return train["lr"] * train["min_lr_ratio"]


def test_resume_goes_on_with_the_time_left(five_seconds, prepared, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(five_seconds[0], run)
    before = (run / "checkpoints" / "last.safetensors").read_bytes()
    # the same limit: nothing left, nothing trained, nothing written
    clock = FakeClock()
    spent = train_model(prepared.data, run, config=timed(prepared, 5), resume=True, clock=clock)
    assert spent.already_spent and spent.time_up and (spent.epochs_done, spent.elapsed) == (2, 5.0)
    assert (run / "checkpoints" / "last.safetensors").read_bytes() == before and len(rows(run)) == 3
    # a larger limit, 8 s in all: 3 more steps, the schedule laid over the new total from 5 s of 8 on
    reporter = StepSeconds(clock)
    more = train_model(prepared.data, run, config=timed(prepared, 8), resume=True, reporter=reporter, clock=clock)
    assert more.time_up and (more.steps_done, more.epochs_done, more.elapsed) == (8, 4, 8.0)
    assert reporter.started == [(5, 8.0, 5.0)]
    config = timed(prepared, 8).train
    assert reporter.lrs == pytest.approx([config.lr * lr_factor_by_time(i / 8, 0.5, config.min_lr_ratio)
                                          for i in (5, 6, 7)])  # fmt: skip
    assert [r["epoch"] for r in rows(run)] == ["1", "2", "3", "4"]  # the partial third row was done again
    assert load_train_state(run / STATE)["elapsed"] == 8.0


def test_mspt_train_time_limit_end_to_end(prepared, tmp_path):
    run = tmp_path / "run"
    result = ok("train", prepared.data, "-o", run, "-c", prepared.config, "--time-limit", "3s", "train.threads=1")
    assert "time limit 3s reached after" in result.output, result.output
    for name in ("best.safetensors", "last.safetensors"):
        assert (run / "checkpoints" / name).is_file()
    assert rows(run) and yaml.safe_load((run / "config.yaml").read_text())["train"]["time_limit"] == 3.0
    state = load_train_state(run / STATE)
    assert state["elapsed"] >= 3.0  # it stops only once the time is spent (how far past it depends on the machine)
    again = ok("train", prepared.data, "-o", run, "--resume")
    lines = [line for line in again.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("time limit 3s already spent ("), again.output
    assert load_train_state(run / STATE)["elapsed"] == state["elapsed"]


def test_the_progress_bar_counts_the_time_down():
    from msptcli.cli_output import TrainProgress

    with TrainProgress() as bar:
        bar.start(40, 12, 60.0, 15.0)
        bar.step(0.5, 1e-3, 20.0)
        task = bar.bar.tasks[0]
        assert (task.total, task.completed, task.fields["left"], task.fields["steps"]) == (60.0, 20.0, "40s", 13)
        bar.epoch(7, {"train_loss": 0.5})  # the epoch lines as ever


SKEWED_RANKS = """
import os, sys, time
from safetensors.torch import save_file
from msptcli.config import load_config
from msptcli.train.loop import train_model

data, run, config, out = sys.argv[1:5]
rank = int(os.environ["RANK"])
rate = 1 + 2 * rank  # rank 1's clock runs three times as fast: only an agreement stops both at one step
summary = train_model(data, run, config=load_config(config, ["train.time_limit=2", "train.threads=1"]),
                      clock=lambda: time.monotonic() * rate)
weights = {k: v.contiguous() for k, v in summary.model.state_dict().items()}
save_file(weights, f"{out}/rank{rank}.safetensors", metadata={"steps": str(summary.steps_done)})
"""


@pytest.mark.slow
def test_ranks_with_different_clocks_stop_at_the_same_step(prepared, tmp_path):
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file

    script = tmp_path / "ranks.py"
    script.write_text(SKEWED_RANKS)
    done = torchrun(script, prepared.data, tmp_path / "run", prepared.config, tmp_path)
    assert done.returncode == 0, ranks_said(done)
    files = [tmp_path / f"rank{r}.safetensors" for r in (0, 1)]
    steps = [safe_open(f, "numpy").metadata()["steps"] for f in files]
    assert steps[0] == steps[1] and int(steps[0]) >= 1
    rank0, rank1 = (load_file(f) for f in files)
    assert all(np.array_equal(rank0[k], rank1[k]) for k in rank0)  # the same rates: identical replicas
    assert load_train_state(tmp_path / "run" / STATE)["elapsed"] >= 2.0  # what stopped it: the time is spent
