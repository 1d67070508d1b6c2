"""scaling: an experiment platform for scaling studies of visual tokenizers.

Importing the package is cheap and torch-free; subpackages import their heavy dependencies themselves.
"""

import importlib
import sys
import types

__version__ = "0.1.0"


class _Deferred(types.ModuleType):
    """A subpackage of a dependency registered empty, imported for real on first use of one of its names."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):  # introspection (inspect, pickle) must not trigger the import
            raise AttributeError(name)
        del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


# mosaicml-streaming's package __init__ imports its text and multimodal datasets, and through them transformers and
# scikit-learn: 2.5 of the 5.5 seconds every job, requeue and probe spends importing, for classes the platform never
# uses (it reads images with streaming.base). Unless streaming is loaded already, those two are deferred.
if "streaming" not in sys.modules:
    for _name in ("streaming.text", "streaming.multimodal", "streaming.vision"):
        sys.modules.setdefault(_name, _Deferred(_name))
