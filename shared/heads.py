"""Custom classes on YAMNet: a small trained head, one JSON file, numpy only to run.

A head reads what YAMNet already computes for every window: the 1024-d embedding and the
521 class scores (as log-odds, so "this is music" is an explicit input and not something
a head trained on a few hundred clips must learn again). It is a one-hidden-layer MLP
with one sigmoid per class (classes can co-occur: glass breaking while someone screams);
each class has a threshold calibrated for a target precision on recordings the head was
not trained on. Training lives in `earwitness.cloud.heads`; devices only load and run.

The artifact is a JSON document: readable metadata (classes, thresholds, the YAMNet model
it expects, the training-data hash and the validation report) and base64 arrays, float16
where that holds the values exactly (training rounds its weights to float16 before it
calibrates, so the file a device loads is the model that was calibrated, at half the
bytes: a 96-unit head is ~0.4 MB and fits a signed remote config inline), float32
otherwise. Format 1 files (float32 only) still load.
A sha256 over the canonical document makes a damaged or edited file fail to load.

A head may also read how the embedding changed since the previous window (``delta``,
format 3, `earwitness train --delta`): a scream or a crash is a change in the room, a
vacuum cleaner that has been going for a minute is not, though single windows of both
look alike. It raised recall on the distress folds and false alarms on unseen clips
(docs/benchmarks.md), so it is not the default. The first window of a stream or clip
has no predecessor and reads a delta of zero.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from earwitness.shared.errors import ModelError
from earwitness.shared.runner import EMBEDDING_SIZE

FORMAT = "earwitness-head"
FORMAT_VERSION = 2  # heads without delta; older releases load them
DELTA_FORMAT_VERSION = 3  # with delta: a release that cannot run it refuses the file
READABLE_VERSIONS = (1, 2, 3)  # 1: float32 arrays only; 2: float16 where exact; 3: delta
ENCODINGS = {"f16": "<f2", "f32": "<f4"}  # array key in the file -> little-endian dtype
SCORES_SIZE = 521  # YAMNet's AudioSet classes
INPUT_SIZE = EMBEDDING_SIZE + SCORES_SIZE
INPUTS = {
    False: "yamnet-embedding-1024+logodds-521",
    True: "yamnet-embedding-1024+logodds-521+embedding-delta-1024",
}
MAX_HEAD_BYTES = 16 * 1024 * 1024  # a 1545x96 float16 MLP is ~0.4 MB; refuse anything absurd
CLASS_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # becomes a label in messages and SQL
LOGIT_CLIP = 1e-4  # scores of exactly 0 or 1 would be infinite log-odds
ARRAYS = ("mean", "scale", "w1", "b1", "w2", "b2")


class HeadError(ModelError):
    """A head file that cannot be used: unreadable, damaged, or for another model."""


def to_float16_grid(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``a`` rounded to the nearest float16 values, kept as float32 for computing."""
    return np.asarray(a, dtype=np.float32).astype(np.float16).astype(np.float32)


def _encode(a: npt.NDArray[np.float32]) -> dict[str, Any]:
    data = np.ascontiguousarray(a, dtype="<f4")
    half = data.astype("<f2")
    if np.array_equal(half.astype("<f4"), data):  # lossless: half the bytes
        return {"shape": list(data.shape), "f16": base64.b64encode(half.tobytes()).decode()}
    return {"shape": list(data.shape), "f32": base64.b64encode(data.tobytes()).decode()}


def _decode(name: str, blob: Any) -> npt.NDArray[np.float32]:
    try:
        shape = tuple(int(n) for n in blob["shape"])
        key = "f16" if "f16" in blob else "f32"
        raw = base64.b64decode(blob[key], validate=True)
        a = np.frombuffer(raw, dtype=ENCODINGS[key]).reshape(shape).astype(np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise HeadError(f"array {name!r} is damaged ({exc})") from exc
    if not np.all(np.isfinite(a)):
        raise HeadError(f"array {name!r} holds NaN or infinity")
    return a


def _digest(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def head_features(
    embeddings: npt.NDArray[np.float32], scores: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """What a head reads for each window: embedding and YAMNet log-odds, side by side."""
    emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    p = np.clip(np.atleast_2d(np.asarray(scores, dtype=np.float32)), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.concatenate([emb, np.log(p / (1 - p))], axis=1).astype(np.float32)


def with_delta(
    features: npt.NDArray[np.float32], previous: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.float32]:
    """Window features of consecutive windows, each followed by its embedding minus the
    previous window's (``previous``: the features of the window before the first; None:
    the first window's delta is zero)."""
    x = np.atleast_2d(np.asarray(features, dtype=np.float32))
    emb = x[:, :EMBEDDING_SIZE]
    first = emb[:1] if previous is None else np.atleast_2d(previous)[:, :EMBEDDING_SIZE]
    before = np.concatenate([first, emb[:-1]])
    return np.concatenate([x, emb - before], axis=1).astype(np.float32)


@dataclass
class Head:
    """A loaded head: call `scores` with window features, compare with `thresholds`."""

    name: str
    classes: list[str]
    thresholds: dict[str, float]
    model_id: str
    arrays: dict[str, npt.NDArray[np.float32]]
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    delta: bool = False  # also reads the embedding's change from the previous window

    @property
    def input_size(self) -> int:
        return INPUT_SIZE + (EMBEDDING_SIZE if self.delta else 0)

    def __post_init__(self) -> None:
        if not self.classes:
            raise HeadError("a head needs at least one class")
        for c in self.classes:
            if not CLASS_NAME.match(c):
                raise HeadError(
                    f"class name {c!r}: use 1-32 lower-case letters, digits or _ (a-z first)"
                )
        if len(set(self.classes)) != len(self.classes):
            raise HeadError(f"duplicate class names in {self.classes}")
        missing = [c for c in self.classes if c not in self.thresholds]
        if missing:
            raise HeadError(f"no threshold for {missing}")
        for c, t in self.thresholds.items():
            if not 0.0 <= float(t) <= 1.0:
                raise HeadError(f"threshold of {c!r} is {t}: must be within 0..1")
        a = self.arrays
        absent = [k for k in ARRAYS if k not in a]
        if absent:
            raise HeadError(f"missing arrays {absent}")
        hidden = a["w1"].shape[1] if a["w1"].ndim == 2 else -1
        size = self.input_size
        expected = {
            "mean": (size,),
            "scale": (size,),
            "w1": (size, hidden),
            "b1": (hidden,),
            "w2": (hidden, len(self.classes)),
            "b2": (len(self.classes),),
        }
        for k, shape in expected.items():
            if a[k].shape != shape:
                raise HeadError(f"array {k!r} has shape {a[k].shape}, expected {shape}")
        # Fold the standardisation into the first layer: one matmul per window on devices.
        self._w1 = (a["w1"] / a["scale"][:, None]).astype(np.float32)
        self._b1 = (a["b1"] - (a["mean"] / a["scale"]) @ a["w1"]).astype(np.float32)
        self._thr = np.array([self.thresholds[c] for c in self.classes], dtype=np.float32)

    @property
    def head_id(self) -> str:
        """``name@sha12``, as status, heartbeats and rows record it."""
        return f"{self.name}@{self.sha256[:12]}"

    def scores(
        self, features: npt.NDArray[np.float32], previous: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        """(n, classes) sigmoid scores for (n, INPUT_SIZE) features of consecutive windows
        (`head_features`); ``previous``: the features of the window before them, which a
        delta head compares the first one with."""
        x = with_delta(features, previous) if self.delta else np.atleast_2d(features)
        hidden = np.maximum(x @ self._w1 + self._b1, 0.0)
        logits = hidden @ self.arrays["w2"] + self.arrays["b2"]
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))).astype(np.float32)

    def window_scores(
        self, embedding: npt.NDArray[np.float32], scores: npt.NDArray[np.float32]
    ) -> dict[str, float]:
        """One window: ``{class: score}``."""
        s = self.scores(head_features(embedding, scores))[0]
        return {c: float(v) for c, v in zip(self.classes, s, strict=True)}

    def decisions(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
        return np.asarray(scores) >= self._thr

    def check_model(self, model_id: str) -> None:
        if model_id != self.model_id:
            raise HeadError(
                f"head {self.head_id} was trained on {self.model_id}, the device runs {model_id}"
            )

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "format_version": DELTA_FORMAT_VERSION if self.delta else FORMAT_VERSION,
            "name": self.name,
            "classes": self.classes,
            "thresholds": {c: round(float(self.thresholds[c]), 6) for c in self.classes},
            "model_id": self.model_id,
            "input": INPUTS[self.delta],
            "arrays": {k: _encode(self.arrays[k]) for k in ARRAYS},
            "meta": self.meta,
        }
        doc["sha256"] = _digest(doc)
        return doc

    def save(self, path: Path) -> str:
        """Write atomically; returns the head's sha256."""
        doc = self.to_document()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, allow_nan=False, indent=1))
        tmp.replace(path)
        self.sha256 = doc["sha256"]
        return self.sha256


def parse_head(blob: bytes, source: str = "<head>") -> Head:
    """A head from its file's bytes; every problem is a HeadError naming the source."""
    if len(blob) > MAX_HEAD_BYTES:
        raise HeadError(f"{source}: {len(blob)} bytes, more than {MAX_HEAD_BYTES}")
    try:
        doc = json.loads(blob)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeadError(f"{source}: not a head file (not JSON: {exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise HeadError(f"{source}: not a head file (format is not {FORMAT!r})")
    if doc.get("format_version") not in READABLE_VERSIONS:
        raise HeadError(
            f"{source}: head format version {doc.get('format_version')!r}, this release reads"
            f" {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if doc.get("sha256") != _digest(doc):
        raise HeadError(f"{source}: checksum mismatch (the file is damaged or was edited)")
    delta = doc.get("format_version") == DELTA_FORMAT_VERSION
    if doc.get("input", INPUTS[delta]) != INPUTS[delta]:
        raise HeadError(
            f"{source}: input {doc.get('input')!r}, this release reads {INPUTS[delta]!r}"
            f" in format {doc.get('format_version')}"
        )
    try:
        arrays = {k: _decode(k, doc["arrays"][k]) for k in ARRAYS}
        head = Head(
            name=str(doc["name"]),
            classes=[str(c) for c in doc["classes"]],
            thresholds={str(k): float(v) for k, v in doc["thresholds"].items()},
            model_id=str(doc["model_id"]),
            arrays=arrays,
            meta=dict(doc.get("meta") or {}),
            sha256=str(doc["sha256"]),
            delta=delta,
        )
    except HeadError as exc:
        raise HeadError(f"{source}: {exc}") from exc
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise HeadError(f"{source}: not a head file ({exc!r} missing or wrong)") from exc
    return head


def load_head(path: Path) -> Head:
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise HeadError(f"{path}: cannot read head ({exc.strerror})") from exc
    return parse_head(blob, str(path))


def load_heads(paths: list[Path], model_id: str) -> list[Head]:
    """The heads a device runs: each must load, fit ``model_id``, and add new classes."""
    return checked_heads([(str(p), load_head(p)) for p in paths], model_id)


def checked_heads(named: list[tuple[str, Head]], model_id: str) -> list[Head]:
    """Heads that can run together on ``model_id``: each fits it, no class twice."""
    seen: dict[str, str] = {}
    for source, head in named:
        try:
            head.check_model(model_id)
        except HeadError as exc:
            raise HeadError(f"{source}: {exc}") from exc
        for c in head.classes:
            if c in seen:
                raise HeadError(f"{source}: class {c!r} is also in {seen[c]}")
            seen[c] = source
    return [head for _source, head in named]
