"""Optional packages (pyproject's extras): imported only when the engine, tracker or transform that needs one is
chosen, never by ``import fedloom.cli`` or ``import fedloom.run``, so that ``fedloom run --help`` and every run
that does not use them work without them installed.

A component that needs one calls ``require`` where it is built (before any run folder exists), which imports it
or raises one ConfigError naming the package and the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

from fedloom.errors import ConfigError


def require(module: str, extra: str, user: Optional[str] = None) -> ModuleType:
    """``module`` imported, or ConfigError: "<user> needs the optional package 'X': pip install 'fedloom[extra]'".
    ``user`` names what asked for it (default: the extra), e.g. "tracker 'mlflow'" or "engine 'ray'". X is the
    package that is missing (the module's own, or one it needs); a package that is installed but fails to
    import otherwise (a version mismatch) is reported as such, with its own error."""
    user = user or f"'{extra}'"
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) and exc.name else None
        if missing is not None:
            raise ConfigError(f"{user} needs the optional package '{missing.split('.')[0]}': "
                              f"pip install 'fedloom[{extra}]'") from None
        raise ConfigError(f"{user}: the optional package '{module.split('.')[0]}' is installed but cannot be "
                          f"imported ({type(exc).__name__}: {exc}); pip install 'fedloom[{extra}]' installs the "
                          f"versions it needs") from None
