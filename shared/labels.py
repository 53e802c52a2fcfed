"""AudioSet class map and the named label groups (speech, distress, alarm, animal, ...)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml

from shared.errors import ConfigError, ModelError

NUM_CLASSES = 521


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
        if path is None:
            text = resources.files("shared.data").joinpath(DEFAULT_GROUPS_FILE).read_text()
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
        groups: dict[str, LabelGroup] = {}
        for name, spec in data["groups"].items():
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
                str(name), str(spec.get("description", "")), tuple(sorted(set(indices)))
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

    def groups_of(self, index: int) -> list[str]:
        return [n for n, g in self.groups.items() if index in g.indices]
