"""Turn Google's VGGish release files into what the backend loads.

``vggish_model.ckpt`` is a TensorFlow (V1) checkpoint; reading it needs TensorFlow, which
only this one-off conversion uses (``pip install 'earwitness[vggish-convert]'`` on any
machine). The same weights saved as ``.npz`` under the checkpoint's variable names
convert without TensorFlow. ``vggish_pca_params.npz`` is checked and copied unchanged.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from earwitness.cloud.secondopinion.vggish import graph, params
from earwitness.cloud.secondopinion.vggish.postprocess import Pca
from earwitness.shared.errors import ModelError
from earwitness.shared.model_registry import sha256_of

Progress = Callable[[str], None]


def read_checkpoint(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    """VGGish's variables from a TensorFlow checkpoint or an ``.npz`` of the same names."""
    if not path.exists() and not Path(f"{path}.index").exists():
        raise ModelError(f"{path}: no such checkpoint")
    if path.suffix == ".npz":
        try:
            with np.load(path) as data:
                found = {name: np.asarray(data[name]) for name in data.files}
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read weights: {exc}") from None
    else:
        try:
            import tensorflow as tf
        except ImportError:
            raise ModelError(
                f"{path}: reading a TensorFlow checkpoint needs TensorFlow; install it with"
                " `pip install 'earwitness[vggish-convert]'` (any machine will do; the"
                " converted vggish.onnx runs without it)"
            ) from None
        try:
            reader = tf.train.load_checkpoint(str(path))
        except Exception as exc:  # TF raises its own error types for unreadable files
            raise ModelError(f"{path}: not a readable TensorFlow checkpoint: {exc}") from None
        found = {
            name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if name in params.checkpoint_shapes()
        }
    return _validated(found, path)


def _validated(
    found: dict[str, npt.NDArray[np.generic]], source: Path
) -> dict[str, npt.NDArray[np.float32]]:
    out: dict[str, npt.NDArray[np.float32]] = {}
    for name, shape in params.checkpoint_shapes().items():
        if name not in found:
            raise ModelError(f"{source}: variable '{name}' is missing (is this VGGish?)")
        array = np.asarray(found[name])
        if array.shape != shape:
            raise ModelError(
                f"{source}: variable '{name}' has shape {array.shape}, expected {shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ModelError(f"{source}: variable '{name}' holds NaN or infinite values")
        out[name] = array.astype(np.float32)
    return out


def convert(
    checkpoint: Path, pca: Path, out_dir: Path, progress: Progress = lambda _msg: None
) -> tuple[Path, Path]:
    """Write ``vggish.onnx`` and ``vggish_pca_params.npz`` into ``out_dir``."""
    Pca.load(pca)  # the small file first: refuse a bad one before the slow read
    progress(f"reading {checkpoint}")
    weights = read_checkpoint(checkpoint)
    progress(f"hashing {checkpoint}")
    source = checkpoint if checkpoint.is_file() else Path(f"{checkpoint}.index")
    metadata = {
        "source": checkpoint.name,
        "weights_sha256": sha256_of(source),
        "pca_sha256": sha256_of(pca),
        "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "recipe": "tensorflow/models research/audioset/vggish (vggish_slim, vggish_input)",
    }
    progress("building the ONNX graph")
    model = graph.vggish_model(weights, metadata)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / params.MODEL_FILE
    tmp = model_path.with_suffix(".onnx.tmp")
    onnx.save_model(model, tmp)
    tmp.replace(model_path)
    pca_path = out_dir / params.PCA_FILE
    if pca.resolve() != pca_path.resolve():
        shutil.copyfile(pca, pca_path)
    progress(f"wrote {model_path} ({model_path.stat().st_size / 1e6:.0f} MB) and {pca_path}")
    return model_path, pca_path
