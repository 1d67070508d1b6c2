"""Token structures end to end through the CLI: ImageFolder's quantiser (product quantisation at multiple residual
scales, as VAR) and DetailFlow's coarse-to-fine 1D tokens each train, survive a kill bit for bit, export, are
evaluated (each part's codebook usage; PSNR and rFID per number of scales; per prefix, against the image and against
the prefix's own target) and probed by the AR probe. The structures one by one, in every family that takes them,
and ImageFolder's semantically regularised part: ``tests/models/test_token_structures.py``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scaling.export.generator import load_generator
from tests.helpers import (assert_bitwise_equal, final_state, history, literal, run_cli, run_main, teacher_features,
                           tiny_args)

pytestmark = pytest.mark.slow

STRUCTURES = {
    # ImageFolder's quantiser: product quantisation (two parts of 512 codes) at multiple scales (VAR's residual
    # quantisation at 1, 2, 4 and 8 tokens a side), on the tiny CNN (its semantic part: tests/models)
    "imagefolder": ("var-tiny", {"quantizer.parts": 2}),
    # DetailFlow: 16 coarse-to-fine 1D tokens, each prefix trained against its degraded image
    "detailflow": ("titok-tiny", {"model.nested_dropout": True, "model.coarse_to_fine": True}),
}
PROBE = {"probe.size": "tiny", "probe.steps": 4, "probe.ckpt_every": 4, "probe.log_every": 2, "probe.batch_size": 16,
         "probe.gfid_samples": 8, "probe.cfg_scales": [1.0], "probe.linear_probe_epochs": 1,
         "probe.linear_probe_images": 64, "eval.num_images": 16, "eval.fid_features": "teacher"}


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_a_token_structure_resumes_bitwise_exports_evaluates_and_probes(structure: str, synth_data: Path,
                                                                       random_vit: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    config, extra = STRUCTURES[structure]
    extra = extra | {"train.steps": 6, "train.ckpt_every": 3, "train.val_every": 6, "train.log_every": 3,
                     "train.batch_size": 8, "optim.warmup_steps": 0} | teacher_features(random_vit)
    uris = {name: f"sqlite:///{tmp_path / name}.db" for name in ("straight", "killed")}
    straight = run_cli("train", config, *tiny_args(synth_data, tmp_path / "straight", uris["straight"], **extra))
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed_args = tiny_args(synth_data, tmp_path / "killed", uris["killed"], **extra)
    assert run_cli("train", config, *killed_args, env={"SCALING_FAULT": "checkpoint-saved:3"}).returncode == -9
    assert run_cli("train", config, *killed_args).returncode == 0
    state = final_state(tmp_path / "straight", 6)
    assert_bitwise_equal(state, final_state(tmp_path / "killed", 6))
    run, _ = history(uris["killed"], "train/loss")
    params = run.data.params

    out = tmp_path / "g.safetensors"
    assert run_main(capsys, "export", str(tmp_path / "killed"), "--out", str(out)).returncode == 0
    model, cfg = load_generator(out, ema=False)
    assert_bitwise_equal(state["model"], model.state_dict())
    proc = run_main(capsys, "eval", str(tmp_path / "killed"), "--eval.fid_features", "teacher",
                    "--eval.num_images", "16", "--eval.stats_cache", str(tmp_path / "fid"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads(next((tmp_path / "killed" / "eval").glob("step-*/metrics.json")).read_text())["metrics"]

    if structure == "imagefolder":
        assert (cfg.quantizer.parts, params["bottleneck_tokens"]) == (2, str(1 + 4 + 16 + 64))
        assert params["bottleneck_bits"] == str(85 * 2 * 9)
        for part in (0, 1):  # each part's codebook
            assert 0 < run.data.metrics[f"val/codebook_usage_part{part}"] <= 1
            assert 0 < evaluated[f"eval/codebook_usage_part{part}"] <= 1
        # the first 1, 2 and 3 scales' rFID and PSNR alone (that PSNR rises with them once trained: the models test)
        assert {f"eval/{m}_scales{k}" for m in ("rfid", "psnr") for k in (1, 2, 3)} <= set(evaluated)
        assert "eval/psnr_scales4" not in evaluated  # all four: eval/psnr itself
    else:
        # every prefix against the whole image and against its own (degraded) target; all 16 tokens: the image
        assert {f"eval/{m}_keep{k}{t}" for m in ("psnr", "rfid") for k in (1, 2, 4, 8) for t in ("", "_target")} \
            <= set(evaluated)
        assert evaluated["eval/psnr_keep1_target"] > evaluated["eval/psnr_keep1"]  # one token: a flat colour

    # both probes for ImageFolder's: the flow probe on its code vectors, its samples snapped by its own quantiser;
    # the AR probe predicting its next scale, as VAR does (the token cache and decoding are next-token's)
    kinds = {"probe.kinds": ["ar", "flow"], "probe.order": "scale"} if structure == "imagefolder" else \
        {"probe.kinds": ["ar"]}
    kinds["probe.sample_steps"] = 5
    flat = [x for k, v in (PROBE | kinds | {"eval.stats_cache": str(tmp_path / "fid")}).items()
            for x in (f"--{k}", literal(v))]
    probed = run_cli("probe", str(tmp_path / "killed"), *flat)
    assert probed.returncode == 0, probed.stderr[-3000:]
    results = json.loads((tmp_path / "killed" / "probe" / "results.json").read_text())
    meta = json.loads(next((tmp_path / "killed").rglob("tokens.json")).read_text())
    assert meta["seq_len"] == {"imagefolder": 85, "detailflow": 16}[structure]  # a folded token: one position
    # four steps from its initialisation: about log(512) nats per code, summed over a folded token's parts
    parts = cfg.quantizer.parts
    assert results["probe/ar_val_loss"] == pytest.approx(parts * math.log(512), rel=0.2)
    assert results["probe/gfid"] > 0
    probe_run, _ = history(uris["killed"], "probe/train_loss")
    assert probe_run.data.params["probe.order"] == ("scale" if structure == "imagefolder" else "token")
    if structure == "imagefolder":
        flow = json.loads((tmp_path / "killed" / "flow-probe" / "results.json").read_text())
        assert flow["flow/gfid"] > 0 and flow["flow/val_loss"] > 0
