"""Let a module be called like its main function.

``bitnet_lab.bench(...)`` and ``bitnet_lab.verify(...)`` are the public spelling
(docs/design.md#the-public-surface), but ``bitnet_lab.bench`` is also a submodule, and importing a
submodule rebinds the package attribute to the module object. Making those two modules callable keeps both spellings
working: ``bitnet_lab.bench(model)`` and ``bitnet_lab.bench.BenchTable``.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable


def make_module_callable(module_name: str, function: Callable[..., Any]) -> None:
    """Calling the module ``module_name`` calls ``function`` with the same arguments."""

    class _CallableModule(types.ModuleType):
        __doc__ = sys.modules[module_name].__doc__

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
