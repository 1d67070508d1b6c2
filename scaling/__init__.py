"""scaling: an experiment platform for scaling studies of visual tokenizers.

Importing the package is cheap and torch-free; subpackages import their heavy dependencies themselves.
"""

__version__ = "0.1.0"
