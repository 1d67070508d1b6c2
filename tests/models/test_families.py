"""A tokenizer family lives in one module and the factory's registry: every registered family declares what
the rest of the package asks of it (sizes, checks, plan summary, FSDP units), and parallelize, plan and the
commands ask the registry or the model, never a family module."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from torch.distributed.fsdp import FSDPModule

from scaling.core.config import ConfigError, ParallelConfig
from scaling.core.runtime import Runtime, init_runtime
from scaling.models.factory import FAMILIES, build_tokenizer, load_config
from scaling.parallel.parallelize import float8_targets, needs_fsdp, parallelize_tokenizer, units
from scaling.plan.count import plan
from scaling.plan.memory import plan_memory

PACKAGE = Path(__file__).resolve().parents[2] / "scaling"
TINY = {"vqgan": "tiny", "gigatok": "gigatok-tiny", "titok": "titok-tiny", "tokenflow": "tokenflow-tiny"}


def test_every_family_has_a_tiny_config() -> None:
    assert set(TINY) == set(FAMILIES)  # a new family ships a CPU-sized config for the tests below


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_declares_what_the_package_asks_of_it(name: str) -> None:
    family, cfg = FAMILIES[name], load_config(TINY[name])
    assert family.name == name == cfg.model.family
    assert family.check(cfg) == []
    assert family.describe(cfg).startswith(name)
    with torch.device("meta"):
        model = build_tokenizer(cfg)
    assert type(model).__module__ == family.build.__module__  # the family's module builds its model
    declared = model.unit_types
    assert declared and {type(u) for u in units(model)} == set(declared)  # every unit type occurs
    inside = {id(m) for u in units(model) for m in u.modules()}
    assert all(id(m) in inside for m in float8_targets(model))
    if any(type(u).__name__ == "TransformerBlock" for u in units(model)):
        assert cfg.model.encoder_size in family.sizes and cfg.model.decoder_size in family.sizes


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_plan_counts_and_plans_memory_for_every_family(name: str) -> None:
    cfg = load_config(TINY[name])
    result = plan(cfg)
    assert result.params["params_total"] > 0 and result.flops_per_image > 0
    memory = plan_memory(cfg, result.model, gpus=2, gpu_mem_gib=80, micro_batch=2)
    assert 0 < memory.largest_unit and 0 < memory.root_unit < result.params["params_total"]
    assert memory.activations["full"].per_image < memory.activations["none"].per_image


@pytest.fixture(scope="module")
def world_of_one() -> Iterator[Runtime]:
    rt = init_runtime("cpu")  # gloo
    yield rt
    rt.close()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_parallelize_shards_and_trains_every_family(name: str, world_of_one: Runtime) -> None:
    cfg = load_config(TINY[name])
    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    parallelize_tokenizer(model, ParallelConfig(activation_checkpoint="full"), world_of_one.mesh)
    # Every unit checkpointed; sharded where FSDP2 has work (a world of one stays plain: needs_fsdp).
    sharded = needs_fsdp(world_of_one.mesh)
    assert units(model) and all(isinstance(u, CheckpointWrapper) for u in units(model))
    assert all(isinstance(u, FSDPModule) == sharded for u in units(model))
    recon, q = model(torch.rand(2, 3, cfg.data.image_size, cfg.data.image_size) * 2 - 1)
    (recon.square().mean() + q.codebook_loss + q.commit_loss).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_family_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"^model\.family: unknown family 'nope' \(known: vqgan, gigatok, titok, "
                                          r"tokenflow\)$"):
        load_config("tiny", ["--model.family", "nope"])


def _imports(path: Path) -> set[str]:
    """``module`` and ``module.name`` for every ``from module import name`` and ``import module`` in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_parallel_and_plan_ask_the_model_and_the_registry_not_family_modules() -> None:
    family_modules = {f.build.__module__ for f in FAMILIES.values()} | {"scaling.models.transformer"}
    for package in ("parallel", "plan"):
        for path in (PACKAGE / package).rglob("*.py"):
            assert not _imports(path) & family_modules, path


def test_commands_load_configs_with_their_family_checks() -> None:
    """Above core and models, configs are loaded through scaling.models.factory (core's checks and the family's):
    core's ``read_config`` checks keys and types only."""
    core_loader = {"scaling.core.config.read_config", "scaling.core.config.loader.read_config"}
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] not in ("core", "models"):
            assert not _imports(path) & core_loader, path


def test_a_model_without_declared_units_is_one_unit() -> None:
    assert units(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))) == []  # a discriminator: the root alone
