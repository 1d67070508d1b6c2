"""What a sweep file's ``[study]`` section asks for before its trials can train: the synthetic dataset and the
teacher for semantic regularisation. Each is skipped when it is already there."""

from __future__ import annotations

from pathlib import Path

from scaling.sweep.driver import log
from scaling.sweep.spec import SweepSpec


def prepare_data(spec: SweepSpec) -> None:
    synth = spec.study.synth
    if synth is None:
        return
    from scaling.data.build import build_synthetic

    log(f"data: {synth.path} ({synth.classes} classes, {synth.train} + {synth.val} images of {synth.size} px)")
    build_synthetic(Path(synth.path), num_classes=synth.classes, train=synth.train, val=synth.val, size=synth.size,
                    seed=synth.seed, progress=False)


def prepare_teacher(spec: SweepSpec) -> None:
    if spec.study.teacher is None:
        return
    from scaling.sweep.teacher import train_teacher

    data = spec.trial_config(spec.grid_points()[0] if spec.is_grid else {}, spec.run_dir(0)).data
    result = train_teacher(spec.study.teacher, data, spec.teacher_path())
    log(f"teacher: {spec.study.teacher.model}, {result['params'] / 1e3:.0f}k params, validation accuracy "
        f"{result['val_accuracy']:.1%} (chance {result['chance']:.0%}), trained in {result['seconds']:.0f} s "
        f"-> {spec.teacher_path()}")
