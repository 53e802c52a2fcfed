"""AudioSet class map and the named label groups (speech, distress, alarm, animal, ...)."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from earwitness.shared.errors import ConfigError, ModelError

NUM_CLASSES = 521
OTHER_GROUP_COLOR = "#9467bd"  # a window in no group, or a group without a colour
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


@dataclass(frozen=True)
class AudioClass:
    index: int
    mid: str  # AudioSet machine id, stable across model versions
    name: str


@dataclass(frozen=True)
class LabelGroup:
    name: str
    description: str
    indices: tuple[int, ...]
    color: str = OTHER_GROUP_COLOR


class ClassMap:
    """YAMNet's ``index,mid,display_name`` table."""

    def __init__(self, classes: list[AudioClass]) -> None:
        self.classes = classes
        self._by_name = {c.name.casefold(): c for c in classes}
        self._by_mid = {c.mid: c for c in classes}

    @classmethod
    def load(cls, path: Path) -> ClassMap:
        if not path.is_file():
            raise ModelError(
                f"class map not found: {path} (run `earwitness models fetch yamnet-class-map`)"
            )
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"index", "mid", "display_name"} - set(reader.fieldnames or [])
            if missing:
                raise ModelError(f"{path}: class map lacks columns {sorted(missing)}")
            classes = [
                AudioClass(int(row["index"]), row["mid"], row["display_name"]) for row in reader
            ]
        if [c.index for c in classes] != list(range(len(classes))):
            raise ModelError(f"{path}: class indices are not 0..{len(classes) - 1} in order")
        return cls(classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, index: int) -> AudioClass:
        return self.classes[index]

    def find(self, name_or_mid: str) -> AudioClass | None:
        return self._by_mid.get(name_or_mid) or self._by_name.get(name_or_mid.casefold())

    def top_k(self, scores: npt.NDArray[np.float32], k: int) -> list[tuple[AudioClass, float]]:
        k = min(k, scores.shape[-1])
        idx = np.argpartition(-scores, k - 1)[:k]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return [(self.classes[int(i)], float(scores[int(i)])) for i in idx]


DEFAULT_GROUPS_FILE = "label_groups.yaml"

GROUP_FLOOR = 0.2
"""A window belongs to a label group only when the group scores at least this much. Below
it the "top group" of a quiet window is noise: ingest stores NULL, the second opinion
names no group."""


def top_group(
    group_scores: Mapping[str, float], floor: float = GROUP_FLOOR
) -> tuple[str, float] | None:
    """The window's group: the highest-scoring label group, if it reaches ``floor``."""
    if not group_scores:
        return None
    name = max(group_scores, key=lambda g: group_scores[g])
    score = group_scores[name]
    return (name, score) if score >= floor else None


def _read_groups_file(path: Path | None) -> tuple[str, dict[str, Any]]:
    """(source name for errors, the file's ``groups:`` mapping)."""
    if path is None:
        text = resources.files("earwitness.shared.data").joinpath(DEFAULT_GROUPS_FILE).read_text()
        source = f"shared/data/{DEFAULT_GROUPS_FILE}"
    else:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read label groups ({exc})") from exc
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
        raise ConfigError(f"{source}: expected a top-level 'groups:' mapping")
    for name, spec in data["groups"].items():
        color = spec.get("color", OTHER_GROUP_COLOR) if isinstance(spec, dict) else None
        if not isinstance(color, str) or not _HEX_COLOR.fullmatch(color):
            raise ConfigError(f"{source}: group '{name}' color must be like \"#1f77b4\"")
    return source, data["groups"]


def group_colors(path: Path | None = None) -> dict[str, str]:
    """Each group's map colour, read from the groups file alone (no class map needed)."""
    _source, groups = _read_groups_file(path)
    return {str(name): str(spec.get("color", OTHER_GROUP_COLOR)) for name, spec in groups.items()}


class LabelGroups:
    """Groups defined in YAML data, resolved against a class map at load time."""

    def __init__(self, groups: dict[str, LabelGroup]) -> None:
        self.groups = groups
        self._names = list(groups)
        # One (groups x classes) 0/1 matrix so all group scores are one masked max.
        self._mask = np.zeros((len(groups), NUM_CLASSES), dtype=bool)
        for row, group in enumerate(groups.values()):
            self._mask[row, list(group.indices)] = True

    @classmethod
    def load(cls, class_map: ClassMap, path: Path | None = None) -> LabelGroups:
        source, specs = _read_groups_file(path)
        groups: dict[str, LabelGroup] = {}
        for name, spec in specs.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("classes"), list):
                raise ConfigError(f"{source}: group '{name}' needs a 'classes:' list")
            indices = []
            for label in spec["classes"]:
                cls_ = class_map.find(str(label))
                if cls_ is None:
                    raise ConfigError(
                        f"{source}: group '{name}' names unknown class '{label}'"
                        " (use a display name or AudioSet mid from the class map)"
                    )
                indices.append(cls_.index)
            groups[str(name)] = LabelGroup(
                str(name),
                str(spec.get("description", "")),
                tuple(sorted(set(indices))),
                str(spec.get("color", OTHER_GROUP_COLOR)),
            )
        return cls(groups)

    @property
    def names(self) -> list[str]:
        return self._names

    def __contains__(self, name: object) -> bool:
        return name in self.groups

    def scores(self, scores: npt.NDArray[np.float32]) -> dict[str, float]:
        """Group score = max member score, for one window's 521 scores."""
        masked = np.where(self._mask, scores[None, :], -np.inf)
        return {n: float(v) for n, v in zip(self._names, masked.max(axis=1), strict=True)}
