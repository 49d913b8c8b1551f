"""The old import path of :mod:`lmfast.models.downloaded`, kept for code that imports it: this name IS that
module (monkeypatching either name patches the same object)."""
import sys

from .models import downloaded as _module

sys.modules[__name__] = _module
