"""Plugins: third-party algorithms, datasets, models, partitioners, seams and trackers.

A plugin is a Python module that registers components with fedloom's registry decorators when it is imported
(``@ALGORITHMS.register("my-algo")``...). fedloom imports plugins from two places:

- **Entry points** of installed distributions, in the groups of :data:`GROUPS` (``fedloom.algorithms``,
  ``fedloom.datasets``, ``fedloom.models``, ``fedloom.partitioners``, ``fedloom.transforms``,
  ``fedloom.aggregators``, ``fedloom.attacks``, ``fedloom.trackers``). The entry point's value names the
  module (``my_pkg.algos``) or an object in it (``my_pkg.algos:MyAlgo``); loading it imports the module. They
  are loaded lazily, on the first use of any registry, so ``import fedloom`` stays cheap.
- **``--import MODULE_OR_FILE``** on the command line (repeatable; ``fedloom.plugins.import_plugin`` from
  Python): a module name on ``sys.path`` or a ``.py`` file. The list is also put in the environment variable
  ``FEDLOOM_IMPORT`` (``os.pathsep``-separated, files made absolute), which every fedloom process reads on its
  first registry use, so the runs of ``fedloom bench`` and the workers of the processes engine import the same
  plugins as the command that started them.

A plugin that fails to import ends the command with one ConfigError naming it (never a silent absence).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable, Optional

from fedloom.errors import ConfigError

#: The entry-point groups fedloom reads (one per kind of component; a module may register several kinds).
GROUPS = ("fedloom.algorithms", "fedloom.datasets", "fedloom.models", "fedloom.partitioners",
          "fedloom.transforms", "fedloom.aggregators", "fedloom.attacks", "fedloom.trackers")
#: Environment variable holding the ``--import`` list handed down to child processes.
ENV = "FEDLOOM_IMPORT"

_loaded = False      # entry points and $FEDLOOM_IMPORT have been imported in this process
_loading = False     # a plugin is being imported (its own registry calls must not recurse)
_imported: dict[str, ModuleType] = {}  # spec (module name or absolute file) -> module


def ensure_loaded() -> None:
    """Import every plugin once per process (called by the registries on first use)."""
    global _loaded, _loading
    if _loaded or _loading:
        return
    _loading = True
    try:
        every = importlib.metadata.entry_points()  # one scan of the installed distributions for all groups
        for group in GROUPS:
            for entry in every.select(group=group):
                _load_entry_point(group, entry)
        for spec in env_specs():
            import_plugin(spec, export=False)
        _loaded = True
    finally:
        _loading = False


def _load_entry_point(group: str, entry: importlib.metadata.EntryPoint) -> None:
    dist = getattr(getattr(entry, "dist", None), "name", None)
    where = f"entry point '{entry.name} = {entry.value}' (group {group}" + (f", package {dist})" if dist else ")")
    try:
        entry.load()  # imports the module, whose decorators register its components
    except Exception as exc:  # a broken plugin is named, in one line
        raise ConfigError(f"plugin {where} failed to import: {type(exc).__name__}: {exc}") from None


def env_specs() -> list[str]:
    """The ``--import`` list inherited through ``$FEDLOOM_IMPORT``."""
    return [s for s in os.environ.get(ENV, "").split(os.pathsep) if s.strip()]


def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec)


def normalize(spec: str) -> str:
    """A file becomes its absolute path (children may run elsewhere); a module name stays as it is."""
    spec = spec.strip()
    return str(Path(spec).expanduser().resolve()) if _is_file_spec(spec) else spec


def import_plugin(spec: str, export: bool = True) -> ModuleType:
    """Import one ``--import`` plugin (a module name or a ``.py`` file); ``export`` adds it to
    ``$FEDLOOM_IMPORT`` so that child processes import it too. Importing the same spec twice is a no-op."""
    spec = normalize(spec)
    if not spec:
        raise ConfigError("--import needs a module name or a .py file")
    if spec not in _imported:
        _imported[spec] = _import_file(Path(spec)) if _is_file_spec(spec) else _import_module(spec)
    if export and spec not in env_specs():
        os.environ[ENV] = os.pathsep.join([*env_specs(), spec])
    return _imported[spec]


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ConfigError(f"--import {name}: no such module (not on sys.path; give a .py file path or "
                              f"install the package)") from None
        raise ConfigError(f"--import {name} failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"--import {name} failed: {type(exc).__name__}: {exc}") from None


def _import_file(path: Path) -> ModuleType:
    """A plugin file imported under its own stem as module name, so that its classes pickle by reference (the
    processes engine's workers import the same file under the same name)."""
    if not path.is_file():
        raise ConfigError(f"--import {path}: no such file")
    name = path.stem
    existing: Optional[ModuleType] = sys.modules.get(name)
    if existing is not None:
        if Path(getattr(existing, "__file__", "") or "").resolve() == path:
            return existing
        raise ConfigError(f"--import {path}: a module named '{name}' is already imported from elsewhere; "
                          "rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"--import {path} failed: {type(exc).__name__}: {exc}") from None
    return module


def specs_from_argv(argv: Iterable[str]) -> list[str]:
    """``--import X`` / ``--import=X`` occurrences, read before the parser is built (the imported components'
    option flags must exist when it is)."""
    args, specs = list(argv), []
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--import" and i + 1 < len(args):
            specs.append(args[i + 1])
        elif arg.startswith("--import="):
            specs.append(arg.split("=", 1)[1])
    return specs
