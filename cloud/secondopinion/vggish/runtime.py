"""VGGish on ONNX Runtime: examples -> embeddings -> release bytes -> head scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from earwitness.cloud.secondopinion.vggish import frontend, graph, params
from earwitness.cloud.secondopinion.vggish.postprocess import Pca
from earwitness.shared.audio import Waveform
from earwitness.shared.errors import ModelError
from earwitness.shared.model_registry import sha256_of


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session pinned to ``threads`` so a worker uses the core it was given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        raise ModelError(f"{path}: ONNX Runtime cannot load it: {exc}") from None


def _missing(path: Path, how: str) -> ModelError:
    return ModelError(f"vggish: {path} is missing ({how}; see docs/second-opinion.md)")


class VggishEmbedder:
    """The published model and post-processing; no classes of its own."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        model_path = model_dir / params.MODEL_FILE
        pca_path = model_dir / params.PCA_FILE
        if not model_path.is_file():
            raise _missing(
                model_path, "convert Google's vggish_model.ckpt with `earwitness vggish convert`"
            )
        if not pca_path.is_file():
            raise _missing(pca_path, f"download it from {params.PCA_URL}")
        self.session = session(model_path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.model_id = f"vggish@{meta.get('weights_sha256', sha256_of(model_path))[:12]}"
        self.pca = Pca.load(pca_path)

    def embeddings(self, examples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = self.session.run([graph.OUTPUT], {graph.INPUT: examples.astype(np.float32)})
        return np.asarray(out[0], dtype=np.float32)

    def features(self, wave: Waveform) -> npt.NDArray[np.uint8]:
        """(n, 128) uint8 AudioSet-release features of a clip, one row per 0.96 s."""
        return self.pca.postprocess(self.embeddings(frontend.examples(wave)))


class Head:
    """A classifier on VGGish's uint8 features; its classes are AudioSet names or mids."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        if not path.is_file():
            raise _missing(path, "train one with `earwitness vggish train-head`")
        self.session = session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.classes: list[str] = json.loads(meta["classes"])
        except (KeyError, ValueError):
            raise ModelError(f"{path}: head has no 'classes' metadata") from None
        self.model_id = f"head@{sha256_of(path)[:12]}"

    def scores(self, features: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        out = self.session.run([graph.HEAD_OUTPUT], {graph.HEAD_INPUT: features})
        return np.asarray(out[0], dtype=np.float32)
