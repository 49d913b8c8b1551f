"""The old import path of :mod:`lmfast.models.convert_bert`, kept for code that imports it (this
name IS that module) and for ``python -m lmfast.convert_bert`` (which runs its main)."""
import sys

from .models import convert_bert as _module

if __name__ == "__main__":
    sys.exit(_module.main())
sys.modules[__name__] = _module
