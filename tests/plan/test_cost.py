"""A run's planned cost: with ``train.flops_budget`` its steps are those whose FLOPs come nearest the budget."""

from __future__ import annotations

import json

import pytest

from scaling.core.config import ConfigError
from scaling.core.config.loader import set_dotted
from scaling.models.factory import load_config
from scaling.plan.cost import planned_run, run_flops, with_budget_steps
from scaling.plan.count import step_flops, step_flops_done
from tests.helpers import run_main

GAN = {"loss.gan_weight": 0.1, "loss.gan_start": 8, "train.batch_size": 16, "optim.warmup_steps": 2}


def _cfg(**overrides: object):
    tree: dict = {}
    for key, value in {**GAN, **overrides}.items():
        set_dotted(tree, key, value)
    return load_config("tiny", tree)


@pytest.mark.parametrize("steps,fraction", [(5, 0.0), (5, 0.49), (6, -0.49), (8, 0.3), (9, 0.45), (40, -0.2)])
def test_a_budget_buys_the_steps_whose_flops_come_nearest(steps: int, fraction: float) -> None:
    """A budget ``fraction`` of a step away from ``steps`` steps' FLOPs buys ``steps`` steps, before, at and after
    the discriminator joins (step 8), where each step costs more."""
    cfg = _cfg()
    parts = step_flops(cfg)
    assert set(parts) == {"tokenizer", "discriminator"}
    spent = lambda n: step_flops_done(parts, n, 16, 8)  # noqa: E731
    step_cost = spent(steps + 1) - spent(steps) if fraction > 0 else spent(steps) - spent(steps - 1)
    budget = spent(steps) + fraction * step_cost
    resolved = with_budget_steps(_cfg(**{"train.flops_budget": budget}))
    assert resolved.train.steps == steps
    assert planned_run(resolved) == (steps, spent(steps)) and run_flops(resolved) == spent(steps)
    assert abs(spent(steps) - budget) <= step_cost / 2


def test_without_a_budget_the_configured_steps_are_kept() -> None:
    cfg = _cfg(**{"train.steps": 33})
    assert with_budget_steps(cfg) is cfg and planned_run(cfg)[0] == 33


def test_a_budget_that_buys_no_more_than_the_warm_up_is_refused() -> None:
    cfg = _cfg(**{"optim.warmup_steps": 5})
    two_steps = step_flops_done(step_flops(cfg), 2, 16, 8)
    with pytest.raises(ConfigError, match=r"^train.flops_budget: .* buy 2 steps of 16 images, not more than "
                                          r"optim.warmup_steps \(5\)$"):
        with_budget_steps(_cfg(**{"optim.warmup_steps": 5, "train.flops_budget": two_steps}))


def test_a_negative_budget_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="train.flops_budget: must be >= 0"):
        _cfg(**{"train.flops_budget": -1.0})


def test_plan_prints_the_steps_a_budget_buys(capsys: pytest.CaptureFixture) -> None:
    proc = run_main(capsys, "plan", "tiny", "--train.flops_budget", "1e12", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    cfg = load_config("tiny", {"train": {"flops_budget": 1e12}})
    assert (out["run_steps"], out["run_flops"]) == planned_run(cfg)
    assert out["run_steps"] == with_budget_steps(cfg).train.steps != cfg.train.steps
    assert out["run_flops"] == out["run_steps"] * cfg.train.batch_size * out["flops_per_training_image"]
    text = run_main(capsys, "plan", "tiny", "--train.flops_budget", "1e12")
    assert f"training run: {out['run_steps']} steps (bought by train.flops_budget 1e+12) of 32 images" in text.stdout
