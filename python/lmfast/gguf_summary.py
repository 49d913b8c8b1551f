"""The old import path of :mod:`lmfast.models._gguf_summary`, kept for code that imports it: this name IS that
module (monkeypatching either name patches the same object)."""
import sys

from .models import _gguf_summary as _module

sys.modules[__name__] = _module
