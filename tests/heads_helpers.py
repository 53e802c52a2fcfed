"""A small distress training set (../shared/audio/distress, never copied into the repo)
split by recording group into training and held-out clips, and a head trained on it."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from earwitness.cloud.heads.dataset import Example, group_folds, read_dataset
from earwitness.edge.config import EdgeSettings
from tests.conftest import SHARED

DISTRESS = SHARED / "audio" / "distress"
PER_LABEL = {"scream": 28, "glass_break": 28, "negative": 110}  # training subset size


@dataclass(frozen=True)
class Split:
    train: list[Example]
    held_out: list[Example]


def distress_split(seed: int = 0) -> Split:
    """Fold 0 of 3 (whole groups) is held out; training takes the first clips per label
    of the other folds, so the subset trains in seconds."""
    examples = read_dataset(DISTRESS)
    folds = group_folds(examples, 3, seed)
    train: list[Example] = []
    counts = dict.fromkeys(PER_LABEL, 0)
    for ex, fold in zip(examples, folds, strict=True):
        if fold != 0 and counts[ex.label] < PER_LABEL[ex.label]:
            train.append(ex)
            counts[ex.label] += 1
    held = [ex for ex, fold in zip(examples, folds, strict=True) if fold == 0]
    return Split(train, held)


def write_subset(examples: list[Example], directory: Path) -> Path:
    """A meta.csv folder of symlinks to the shared clips (nothing copied)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "meta.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "label", "group_id"])
        for ex in examples:
            link = directory / ex.path.name
            if not link.exists():
                link.symlink_to(ex.path)
            w.writerow([ex.path.name, ex.label, ex.group])
    return directory


def head_trigger_config(directory: Path, site: str, head_path: Path) -> EdgeSettings:
    """An agent running ``head_path`` with an event trigger on each distress class."""
    from tests.edge_helpers import edge_config

    return edge_config(
        directory,
        site,
        model={"heads": [str(head_path)]},
        runtime={
            "detection": {
                "triggers": [{"custom": "scream"}, {"custom": "glass_break"}],
                "min_windows": 1,
            }
        },
    )
