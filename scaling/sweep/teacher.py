"""A small teacher for semantic regularisation, trained in seconds on the study's own data.

A timm ViT (``test_vit`` by default: width 64, 6 blocks) is trained as a supervised classifier of the dataset's
classes, at the side the tokenizers' semantic loss will show it (``loss.semantic_teacher_size``). Its weights,
without the classifier head, are then loaded exactly as a pretrained DINOv2 would be (``FrozenTimm``), so the
semantic loss has real class semantics to align to. What it reached goes to ``teacher.json`` beside the weights.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from scaling.core.config import DataConfig
from scaling.data.loader import augment, open_stream, sample_seeds, to_float, validation_batches
from scaling.models.backbones import check_timm_name, timm_input
from scaling.sweep.spec import StudyTeacher

RECORD = "teacher.json"


def _split(path: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole (small) split in memory: uint8 NCHW images and labels."""
    dataset = open_stream(local=path, shuffle=False)
    images, labels = zip(*validation_batches(dataset, len(dataset), 256, image_size))
    return torch.cat(images), torch.cat(labels)


@torch.no_grad()
def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, size: int) -> float:
    model.eval()
    mean, std = _norm(model)
    correct = sum(int((model(timm_input(to_float(x), size, mean, std)).argmax(1) == y).sum())
                  for x, y in zip(images.split(256), labels.split(256)))
    return correct / len(labels)


def _norm(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.pretrained_cfg
    return torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def train_teacher(spec: StudyTeacher, data: DataConfig, out: Path) -> dict[str, float]:
    """Train the teacher on ``data``'s splits and write its backbone to ``out`` (safetensors, atomically) with
    ``teacher.json`` beside it; a teacher already there for the same spec and data is kept."""
    import timm
    from safetensors.torch import save_file

    record_path = out.parent / RECORD
    wanted = {"spec": asdict(spec), "train": data.train, "val": data.val}
    if out.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if {k: record.get(k) for k in wanted} == wanted:
            return record["result"]
    check_timm_name(spec.model, "study.teacher.model")
    t0 = time.perf_counter()
    torch.manual_seed(spec.seed)
    train_x, train_y = _split(data.train, data.image_size)
    val_x, val_y = _split(data.val, data.image_size)
    classes = int(max(train_y.max(), val_y.max())) + 1
    model = timm.create_model(spec.model, pretrained=False, img_size=spec.size, num_classes=classes)
    mean, std = _norm(model)
    steps_per_epoch = len(train_x) // spec.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, spec.lr, total_steps=spec.epochs * steps_per_epoch)
    for epoch in range(spec.epochs):
        model.train()
        order = torch.randperm(len(train_x))
        for i in range(steps_per_epoch):
            idx = order[i * spec.batch_size:(i + 1) * spec.batch_size]
            x = augment(train_x[idx], data, sample_seeds(spec.seed, epoch, idx))
            loss = F.cross_entropy(model(timm_input(x, spec.size, mean, std)), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    result = {"val_accuracy": _accuracy(model, val_x, val_y, spec.size),
              "train_accuracy": _accuracy(model, train_x, train_y, spec.size),
              "chance": 1.0 / classes, "seconds": time.perf_counter() - t0,
              "params": sum(p.numel() for p in model.parameters())}
    out.parent.mkdir(parents=True, exist_ok=True)
    backbone = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("head.")}
    tmp = out.with_name(out.name + ".tmp")
    save_file(backbone, str(tmp))
    os.replace(tmp, out)
    tmp = record_path.with_name(RECORD + ".tmp")
    tmp.write_text(json.dumps(wanted | {"result": result}, indent=2) + "\n")
    os.replace(tmp, record_path)
    return result
