"""The old import path of :mod:`lmfast.cli._models`, kept for code that imports it: this name IS that
module (monkeypatching either name patches the same object)."""
import sys

from .cli import _models as _module

sys.modules[__name__] = _module
