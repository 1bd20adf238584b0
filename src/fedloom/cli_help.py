"""What ``fedloom run --help`` shows and how ``fedloom list`` lays out its lines.

``fedloom run --algorithm fedprox --help`` shows the run options and the option flags of the components that
command line selects (FedProx, the dataset, the model, the seams and the engine in use), ``--help-all`` those of
every registered component; the hidden flags are still accepted. ``fedloom list`` wraps long descriptions at
the terminal width instead of cutting them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
from typing import Optional, Sequence

from fedloom.config import RUN_FIELDS
from fedloom.registry import canonical

#: Run fields whose values name components with option tables.
SELECTING_FIELDS = ("algorithm", "dataset", "model", "model_family", "engine", "worker_engine", "transform",
                    "aggregator", "attack", "pattern")
HELP_FLAGS = ("-h", "--help")


def help_selection(argv: Optional[Sequence[str]]) -> Optional[set[str]]:
    """The option namespaces ``run --help`` shows for this command line, or None for all of them (not a
    ``run --help``, or ``--help-all``). Unset selections count at their defaults; without ``--model`` the
    options of every model a dataset may pick by default are shown."""
    args = list(argv or [])
    if "run" not in args or "--help-all" in args or not any(a in HELP_FLAGS for a in args):
        return None
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in SELECTING_FIELDS:
        pre.add_argument("--" + name.replace("_", "-"), dest=name, default=RUN_FIELDS[name].default)
    values, _ = pre.parse_known_args(args[args.index("run") + 1:])
    shown: set[str] = set()
    for name in SELECTING_FIELDS:
        value = getattr(values, name)
        shown |= {canonical(part) for part in str(value or "").split(",") if part.strip()}
    if values.attack:
        shown.add("attack")  # the threat model's table (--attack.fraction)
    if not values.model:
        shown |= set(DEFAULT_MODELS)
    return shown


#: What models.default_model_for can pick when --model is not given (the dataset decides once its data are
#: loaded, so ``run --help`` shows the options of each candidate).
DEFAULT_MODELS = ("cnn", "mlp", "logreg", "char-lstm", "fasttext")


def hidden(shown: Optional[set[str]], namespace: str) -> bool:
    return shown is not None and canonical(namespace) not in shown


HELP_ALL_NOTE = ("Shown: the run options and those of the selected algorithm, dataset, model, seams and engine "
                 "(--algorithm X --help for another); --help-all lists every component's options.")


def wrapped_entry(name: str, text: str, width: Optional[int] = None, name_width: int = 16) -> str:
    """``  name   text...`` with the text wrapped at the terminal width and continued under itself."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    indent = " " * (name_width + 3)
    body = textwrap.fill(text, width=max(width, len(indent) + 30), initial_indent=indent,
                         subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)
    head = f"  {name:<{name_width}} "
    if len(head) > len(indent):  # a long name: its text starts on the next line
        return f"  {name}\n{body}" if text else f"  {name}"
    return head + body[len(indent):]


def silence_stdout() -> None:
    """After a BrokenPipeError: point stdout at /dev/null, so that the interpreter's final flush of what is still
    buffered does not print a second traceback ("Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout already closed or not a real file (tests)
        pass
