"""``scaling plan --gpus N --gpu-mem G``: per-GPU memory of FSDP2 training, planned on the meta device."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from scaling.models.factory import load_config
from scaling.models.factory import build_tokenizer
from scaling.plan import memory
from scaling.plan.count import meta_model
from tests.helpers import run_main


def _plan(name: str, gpus: int = 1, gpu_mem: float = 80, micro_batch: int = 4,
          overrides: dict | None = None) -> memory.MemoryPlan:
    cfg = load_config(name, overrides)
    return memory.plan_memory(cfg, meta_model(cfg), gpus, gpu_mem, micro_batch)


def test_sharded_state_scales_as_one_over_gpus() -> None:
    one, four = _plan("gigatok-tiny", gpus=1), _plan("gigatok-tiny", gpus=4)
    assert four.state_total() == pytest.approx(one.state_total() / 4, rel=1e-4)  # shards round up
    for key, parts in one.state.items():
        assert parts["optimizer"] == 2 * parts["params"] == 2 * parts["grads"]  # fp32 master/grad, two moments
    assert four.activations == one.activations and four.gathered == one.gathered  # not sharded


def test_activations_are_linear_in_micro_batch() -> None:
    cfg = load_config("gigatok-tiny")
    model, plan = meta_model(cfg), _plan("gigatok-tiny")
    model = model.to(torch.bfloat16)
    counted = [memory.count_saved(cfg, model, {}, b) for b in (1, 2, 3, 5)]
    for ac in memory.AC_PLANNED:
        steps = {counted[i + 1][ac] - counted[i][ac] for i in range(2)}
        assert len(steps) == 1, ac  # equal increments per image
        assert plan.activations[ac].at(5) == counted[3][ac]


@pytest.mark.parametrize("preset", ["gigatok-tiny", "gigatok-b-l"])
def test_checkpointing_lowers_activations(preset: str) -> None:
    plan = _plan(preset)
    none, full = plan.activations["none"].per_image, plan.activations["full"].per_image
    assert 0 < full < none / 2


def test_suggested_micro_batch_fits_and_one_more_does_not() -> None:
    plan = _plan("gigatok-xl-xxl", gpu_mem=80)
    for ac in memory.AC_PLANNED:
        b = plan.suggest(ac)
        assert b >= 1, ac
        assert plan.total(ac, b) <= 80 * memory.GIB < plan.total(ac, b + 1)
    assert plan.suggest("full") > plan.suggest("none")


def test_loss_networks_counted_from_meta_builds() -> None:
    plan = _plan("gigatok-b-l")  # LPIPS, GAN and the DINOv2 teacher are on in this preset
    assert plan.extras["lpips"] == 14_716_160 * 4  # VGG16 features and LPIPS heads, fp32
    assert plan.extras["teacher"] == pytest.approx(86.6e6 * 4, rel=0.02)  # ViT-B/14, fp32
    bare = _plan("gigatok-b-l", overrides={"loss": {"perceptual_weight": 0.0, "gan_weight": 0.0}})
    assert set(bare.extras) == {"teacher"}
    assert bare.activations["none"].per_image < plan.activations["none"].per_image  # LPIPS/disc backward


def test_meta_autocast_dtype_rule() -> None:
    x, w = torch.empty(2, 8, device="meta"), torch.empty(4, 8, device="meta")
    with memory.MetaAutocast():
        y = F.linear(x, w)
        assert y.dtype == torch.bfloat16
        assert F.layer_norm(y, (4,)).dtype == torch.float32
        assert (y + y).dtype == torch.bfloat16
        assert y.softmax(-1).dtype == torch.float32


def test_planned_activations_match_a_real_cpu_forward() -> None:
    """The meta count against a real fp32 CPU forward: through the same hooks (same tensors, real
    storages), and independently, the net bytes the profiler sees the forward leave allocated. The plan
    adds a backward working set (2x the largest saved tensor) that the profiler does not see: 15%."""
    cfg = load_config("gigatok-tiny")
    torch.manual_seed(0)
    real, batch = build_tokenizer(cfg), 4
    planned = memory.count_saved(cfg, meta_model(cfg), {}, batch, autocast=False)
    assert memory.count_saved(cfg, real, {}, batch, autocast=False) == pytest.approx(planned, rel=0.05)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = memory.training_loss(cfg, real, {}, batch)
    alive = sum(e.self_cpu_memory_usage for e in prof.key_averages())
    assert planned["none"] == pytest.approx(alive, rel=0.15)
    del loss


def test_plan_cli_memory_text_and_json(capsys: pytest.CaptureFixture) -> None:
    proc = run_main(capsys, "plan", "gigatok-tiny", "--gpus", "2", "--gpu-mem", "16", "--micro-batch", "8",
                    "--depth", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for label in ("sharded state", "optimiser", "activations", "full checkpointing",
                  "total at micro-batch 8", "largest micro-batch in 16 GiB"):
        assert label in proc.stdout, label
    proc = run_main(capsys, "plan", "gigatok-tiny", "--json", "--gpus", "2", "--gpu-mem", "16", "--micro-batch", "8")
    out = json.loads(proc.stdout)
    assert {"params_total", "params", "flops_per_image"} <= set(out)  # the keys plan had before
    mem = out["memory"]
    assert mem["gpus"] == 2 and mem["micro_batch"] == 8
    assert mem["suggested_micro_batch"]["full"] > mem["suggested_micro_batch"]["none"] > 0
    assert mem["total"]["none"] == mem["static"] + mem["activations"]["none"]["at_micro_batch"]


def test_too_small_gpu_mem_is_one_line_error(capsys: pytest.CaptureFixture) -> None:
    proc = run_main(capsys, "plan", "gigatok-xl-xxl", "--gpu-mem", "40")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("scaling: error: --gpu-mem: 40 GiB per GPU is too small"), lines[-1]
    assert "use more --gpus" in lines[-1]


@pytest.mark.parametrize("option", [["--gpus", "0"], ["--gpu-mem", "-8"], ["--gpus", "two"]])
def test_counts_and_sizes_must_be_positive_numbers(option: list[str], capsys: pytest.CaptureFixture) -> None:
    from scaling.cli import main

    with pytest.raises(SystemExit) as stop:  # argparse's usage error, before any model is built
        main(["plan", "tiny", *option])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and last.startswith(f"scaling plan: error: argument {option[0]}: "), last
    assert "must be a positive number" in last or "expected int, got 'two'" in last, last
