"""``core.startup.preload``: modules imported with the collector paused, its state given back, the heap frozen."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from scaling.core.startup import preload


@pytest.mark.parametrize("enabled", [True, False])
def test_preload_imports_freezes_and_gives_the_collector_back(enabled: bool) -> None:
    code = f"""
import gc, sys
from scaling.core.startup import preload
{'' if enabled else 'gc.disable()'}
preload("json.decoder", "email.parser")
print("json.decoder" in sys.modules, "email.parser" in sys.modules, gc.isenabled(), gc.get_freeze_count() > 1000)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", str(enabled), "True"]


def test_modules_imported_already_freeze_nothing_more() -> None:
    code = """
import gc
from scaling.core.startup import preload
preload("json.decoder")
frozen = gc.get_freeze_count()
garbage = [[i] for i in range(1000)]
preload("json.decoder")
print(gc.get_freeze_count() == frozen)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True"]


def test_a_failing_import_still_gives_the_collector_back() -> None:
    assert gc.isenabled()
    with pytest.raises(ModuleNotFoundError):
        preload("scaling.no_such_module")
    assert gc.isenabled()
