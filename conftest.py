"""Root conftest: import the installed packages whose source folder at the repository root has the
same name as the package (``lfads_calcium/``, ``lfads_emg/``) before pytest imports their tests.

With ``--import-mode=importlib`` pytest names ``lfads_calcium/tests/test_zig.py`` as the module
``lfads_calcium.tests.test_zig`` and, if ``lfads_calcium`` is not imported yet, creates that parent
from the folder (an empty namespace package), which would hide the installed package (its code is
under ``lfads_calcium/src/``). A package that is not installed is skipped here.
"""

import importlib

for _name in ("lfads_calcium", "lfads_emg"):
    try:
        importlib.import_module(_name)
    except ImportError:
        pass

# Build the fused CPU kernels (lfads_core/model/fused.py) once, before any test runs a model or a
# CLI subprocess: a first build inside a subprocess would print its one-line notice into output
# that a test reads.
from lfads_core.model import fused  # noqa: E402

fused.load()
