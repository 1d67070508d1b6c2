"""scaling: an experiment platform for scaling studies of visual tokenizers.

Importing the package is cheap and torch-free; subpackages import their heavy dependencies themselves.
"""

import importlib
import importlib.abc
import importlib.machinery
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


class _WithoutTransformers(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """streaming's data loader imports transformers (0.9 s, half a second of every job's start once torch is
    loaded) for two classes it only tests batches against, neither of which the platform ever builds. While that
    one module executes, transformers and those two modules are stand-ins holding empty classes; then they are
    removed, so a later ``import transformers`` gets the real one. Where transformers is loaded already, nothing
    is replaced."""

    NAME = "streaming.base.dataloader"
    STAND_INS = {"transformers": None, "transformers.feature_extraction_utils": "BatchFeature",
                 "transformers.tokenization_utils_base": "BatchEncoding"}

    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name != self.NAME or "transformers" in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            self.inner, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        for name, cls in self.STAND_INS.items():
            sys.modules[name] = stand_in = types.ModuleType(name)
            if cls:
                setattr(stand_in, cls, type(cls, (), {"__module__": name}))
        try:
            self.inner.exec_module(module)
        finally:
            for name in self.STAND_INS:
                sys.modules.pop(name, None)


# mosaicml-streaming's package __init__ imports its text and multimodal datasets, and through them transformers and
# scikit-learn: 2.5 of the 5.5 seconds every job, requeue and probe spends importing, for classes the platform never
# uses (it reads images with streaming.base). Unless streaming is loaded already, those two are deferred.
# Its data loader comes without transformers (``_WithoutTransformers``).
if "streaming" not in sys.modules:
    for _name in ("streaming.text", "streaming.multimodal", "streaming.vision"):
        sys.modules.setdefault(_name, _Deferred(_name))
    sys.meta_path.insert(0, _WithoutTransformers())
