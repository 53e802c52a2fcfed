"""Labelled audio folders: a folder per class, or a folder with ``meta.csv``.

``meta.csv`` has ``filename`` and ``label`` columns and optionally ``group_id``: clips cut
from one recording (or one speaker) share it, and splits keep a group on one side, or
validation scores measure memory instead of generalisation. Without ``group_id`` (and in
the folder-per-class layout) every file is its own group. Public corpora name the label
column differently (ESC-50 ``category``, UrbanSound8K ``class``): those are read too, and
``relabel`` maps their names onto ours (``glass_breaking`` -> ``glass_break``).

Extra folders (`read_extra`) are training material only: a general sound corpus whose
other classes are all background for this head, which is how a head meets toilets,
vacuum cleaners and engines it would otherwise first hear on a device.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earwitness.shared.audio import AUDIO_EXTENSIONS
from earwitness.shared.errors import ConfigError

META = "meta.csv"
LABEL_COLUMNS = ("label", "category", "class")  # ours, ESC-50's, UrbanSound8K's


@dataclass(frozen=True)
class Example:
    path: Path
    label: str
    group: str


def read_dataset(directory: Path, relabel: dict[str, str] | None = None) -> list[Example]:
    """Every labelled clip under ``directory``, labels renamed by ``relabel``."""
    relabel = relabel or {}
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory")
    meta = directory / META
    examples: list[Example] = []
    if meta.is_file():
        with meta.open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "filename" not in fields:
                raise ConfigError(f"{meta}: no 'filename' column (columns: {fields})")
            label_column = next((c for c in LABEL_COLUMNS if c in fields), None)
            if label_column is None:
                raise ConfigError(
                    f"{meta}: no label column (one of {list(LABEL_COLUMNS)}; columns: {fields})"
                )
            for line, row in enumerate(reader, start=2):
                path = directory / row["filename"]
                if not path.is_file():
                    raise ConfigError(f"{meta} line {line}: {row['filename']!r} does not exist")
                label = (row[label_column] or "").strip()
                if not label:
                    raise ConfigError(f"{meta} line {line}: empty label")
                group = (row.get("group_id") or "").strip() or f"file:{row['filename']}"
                examples.append(Example(path, relabel.get(label, label), group))
    else:
        for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
            for path in sorted(sub.rglob("*")):
                if path.suffix.lower() in AUDIO_EXTENSIONS:
                    rel = path.relative_to(directory)
                    label = relabel.get(sub.name, sub.name)
                    examples.append(Example(path, label, f"file:{rel}"))
    if not examples:
        raise ConfigError(f"{directory}: no labelled audio (expected {META} or a folder per class)")
    return examples


def read_extra(
    directory: Path, classes: list[str], background: str, relabel: dict[str, str] | None = None
) -> list[Example]:
    """Training-only clips from ``directory``: labels that are one of ``classes`` (after
    ``relabel``) keep their class, every other label is ``background``."""
    return as_extra(read_dataset(directory, relabel), classes, background, directory.name)


def as_extra(
    examples: list[Example], classes: list[str], background: str, source: str
) -> list[Example]:
    """``examples`` as training-only clips: a label that is not one of ``classes`` becomes
    ``background``; groups are named after ``source``."""
    return [
        Example(e.path, e.label if e.label in classes else background, f"extra:{source}:{e.group}")
        for e in examples
    ]


def parse_relabel(pairs: list[str]) -> dict[str, str]:
    """``["FROM=TO", ...]`` as a dict; a malformed pair names itself."""
    out: dict[str, str] = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ConfigError(f"--map {pair!r}: expected FROM=TO, e.g. glass_breaking=glass_break")
        out[source.strip()] = target.strip()
    return out


def data_hash(examples: list[Example]) -> str:
    """sha256 over every file's bytes, label and group: which data made a head."""
    h = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: str(e.path)):
        h.update(f"{ex.path.name}\0{ex.label}\0{ex.group}\0".encode())
        h.update(hashlib.sha256(ex.path.read_bytes()).digest())
    return h.hexdigest()


def group_folds(examples: list[Example], folds: int, seed: int) -> list[int]:
    """A fold per example, whole groups per fold, each label's groups dealt round-robin
    (so every fold gets positives of every class when there are enough groups)."""
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    labels = sorted(
        {e.label for e in examples}, key=lambda lab: sum(e.label == lab for e in examples)
    )
    for label in labels:  # rarest first: their groups spread before the common ones fill
        groups = sorted({e.group for e in examples if e.label == label} - set(fold_of))
        rng.shuffle(groups)
        start = int(rng.integers(folds))
        for i, g in enumerate(groups):
            fold_of[g] = (start + i) % folds
    return [fold_of[e.group] for e in examples]
