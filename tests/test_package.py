"""The root package's import policy: streaming's text and multimodal datasets are deferred, not lost."""

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
