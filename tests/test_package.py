"""The root package's import policy: streaming's text and multimodal datasets are deferred, not lost; its data
loader is imported without transformers, which a later import still gets whole."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout


def test_the_data_path_does_not_import_streamings_text_datasets() -> None:
    out = _run("import sys, scaling.data.loader; print('sklearn' in sys.modules, 'streaming.text.c4' in sys.modules)")
    assert out.split() == ["False", "False"]


def test_a_deferred_subpackage_imports_on_first_use() -> None:
    out = _run("import scaling.data.loader\nfrom streaming.text import StreamingC4\n"
               "import streaming.multimodal as m\nprint(StreamingC4.__name__, m.StreamingInsideWebVid.__name__)")
    assert out.split() == ["StreamingC4", "StreamingInsideWebVid"]


def test_streamings_loader_comes_without_transformers_which_stays_importable() -> None:
    out = _run("import sys, scaling.data.loader\n"
               "from streaming.base import dataloader\n"
               "print('transformers' in sys.modules, dataloader.BatchFeature.__module__)\n"
               "from transformers.feature_extraction_utils import BatchFeature\n"
               "print(BatchFeature.__module__, BatchFeature is dataloader.BatchFeature)")
    assert out.split() == ["False", "transformers.feature_extraction_utils",
                           "transformers.feature_extraction_utils", "False"]
