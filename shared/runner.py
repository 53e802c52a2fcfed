"""Run YAMNet TFLite models: LiteRT first, tflite_runtime on older Jetson images."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from earwitness.shared.audio import SAMPLE_RATE, Waveform
from earwitness.shared.errors import ModelError
from earwitness.shared.frontend import (
    MEL_BANDS,
    PATCH_FRAMES,
    PATCH_HOP_SAMPLES,
    PATCH_SAMPLES,
    padded_length,
    patches,
)
from earwitness.shared.model_registry import InputKind, ModelSpec, get_spec, locate, model_dir

DELEGATE_BANNER = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@contextlib.contextmanager
def _without_delegate_banner() -> Iterator[None]:
    """The TFLite runtime prints an INFO line on the process's stderr (file descriptor 2,
    below Python) every time it loads a model; every command started with it. Native
    output is caught while the model loads and everything but that line is passed on."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            rest = [line for line in caught.read().splitlines(True) if DELEGATE_BANNER not in line]
            if rest:
                sys.stderr.write(b"".join(rest).decode(errors="replace"))
                sys.stderr.flush()


EMBEDDING_TENSOR = "tower0/network/layer28/reduce_mean"
"""The 1024-d average-pooled layer feeding YAMNet's classifier: the transfer-learning input."""
EMBEDDING_SIZE = 1024


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError as exc:
        raise ModelError(
            "no TFLite interpreter: install ai-edge-litert (or tflite-runtime on old Jetsons)"
        ) from exc


@dataclass(frozen=True)
class WindowResult:
    """Scores of one 0.96 s analysis window."""

    start_seconds: float
    scores: npt.NDArray[np.float32]  # (521,) independent sigmoid scores
    embedding: npt.NDArray[np.float32] | None  # (1024,) patch model only
    inference_ms: float


class YamnetModel:
    """One loaded YAMNet model. Not thread-safe: one instance per inference thread."""

    def __init__(
        self,
        path: Path,
        spec: ModelSpec,
        threads: int = 1,
        embeddings: bool = True,
    ) -> None:
        self.spec = spec
        self.path = path
        self.kind = spec.kind
        interpreter_cls = _interpreter_class()
        want_embeddings = embeddings and spec.kind is InputKind.PATCH
        try:
            with warnings.catch_warnings():
                # preserve_all_tensors warns it is "for debugging"; it is how the
                # embedding is read, and costs ~1 MB here.
                warnings.simplefilter("ignore", UserWarning)
                kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": threads}
                if want_embeddings:
                    kwargs["experimental_preserve_all_tensors"] = True
                with _without_delegate_banner():
                    self._it = interpreter_cls(**kwargs)
                    self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: cannot load as a TFLite model ({exc})") from exc
        self._input = self._it.get_input_details()[0]
        self._output = self._it.get_output_details()[0]
        expected = (
            (1, PATCH_FRAMES, MEL_BANDS) if spec.kind is InputKind.PATCH else (PATCH_SAMPLES,)
        )
        if tuple(self._input["shape"]) != expected:
            raise ModelError(
                f"{path}: input shape {tuple(self._input['shape'])}, expected {expected}"
                f" for a {spec.kind} model"
            )
        self._embedding: tuple[int, float, int] | None = None
        if want_embeddings:
            for detail in self._it.get_tensor_details():
                if detail["name"] == EMBEDDING_TENSOR:
                    scale, zero = detail["quantization"]
                    self._embedding = (detail["index"], float(scale), int(zero))
            if self._embedding is None:
                raise ModelError(f"{path}: no tensor named {EMBEDDING_TENSOR}")

    @property
    def embeddings(self) -> bool:
        """Whether each window's 1024-d embedding is read (what custom heads need)."""
        return self._embedding is not None

    @classmethod
    def load(
        cls,
        name: str,
        directory: Path | None = None,
        threads: int = 1,
        embeddings: bool = True,
    ) -> YamnetModel:
        spec = get_spec(name)
        if spec.kind is InputKind.TABLE:
            raise ModelError(f"{name} is a data table, not a model")
        return cls(locate(name, directory or model_dir()), spec, threads, embeddings)

    @property
    def model_id(self) -> str:
        return self.spec.short_id

    def _invoke(self, data: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], float]:
        t0 = time.perf_counter()
        self._it.set_tensor(self._input["index"], data)
        self._it.invoke()
        scores = self._it.get_tensor(self._output["index"])[0].copy()
        return scores, (time.perf_counter() - t0) * 1000.0

    def run_patch(self, features: npt.NDArray[np.float32]) -> WindowResult:
        """Scores (and embedding) of one [96, 64] log-mel patch."""
        scores, ms = self._invoke(features.reshape(1, PATCH_FRAMES, MEL_BANDS))
        embedding = None
        if self._embedding is not None:
            index, scale, zero = self._embedding
            raw = self._it.get_tensor(index).reshape(-1).astype(np.float32)
            embedding = (raw - zero) * np.float32(scale)
        return WindowResult(0.0, scores, embedding, ms)

    def run_waveform(self, window: npt.NDArray[np.float32]) -> WindowResult:
        scores, ms = self._invoke(np.ascontiguousarray(window, dtype=np.float32))
        return WindowResult(0.0, scores, None, ms)

    def classify(self, waveform: Waveform) -> list[WindowResult]:
        """Every 0.96 s window (hop 0.48 s) of a whole 16 kHz waveform."""
        results: list[WindowResult] = []
        if self.kind is InputKind.PATCH:
            for patch in patches(waveform):
                r = self.run_patch(patch.features)
                results.append(
                    WindowResult(patch.start_seconds, r.scores, r.embedding, r.inference_ms)
                )
            return results
        total = padded_length(waveform.size)
        padded = np.zeros(total, dtype=np.float32)
        padded[: waveform.size] = waveform
        for start in range(0, total - PATCH_SAMPLES + 1, PATCH_HOP_SAMPLES):
            r = self.run_waveform(padded[start : start + PATCH_SAMPLES])
            results.append(WindowResult(start / SAMPLE_RATE, r.scores, None, r.inference_ms))
        return results
