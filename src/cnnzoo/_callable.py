"""Make ``cnnzoo.fuse(model)``, ``cnnzoo.compare(...)``, ``cnnzoo.predict(...)``, ``cnnzoo.export(...)`` work
whichever way they were reached.

These functions live in modules of the same name (``cnnzoo/fuse.py`` defines ``fuse``). ``cnnzoo``
exports them lazily, but importing a submodule binds the *module* as the package attribute
(``import cnnzoo.fuse`` sets ``cnnzoo.fuse`` to the module, and so does the lazy import itself), so the
second ``cnnzoo.fuse(model)`` would fail with "module is not callable". Making these few modules
callable (forwarding to their function) keeps both spellings working without renaming files.
"""

from __future__ import annotations

import sys
import types


def make_module_callable(module_name: str, function_name: str) -> None:
    """Calling module ``module_name`` calls its attribute ``function_name`` (looked up at call time)."""

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, function_name)(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
