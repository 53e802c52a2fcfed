"""PCA (with whitening) and 8-bit quantization of embeddings, as in the AudioSet release
(vggish_postprocess.Postprocessor); the classifier head reads these bytes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from earwitness.cloud.secondopinion.vggish import params
from earwitness.shared.errors import ModelError

QUANT_RANGE = params.QUANTIZE_MAX_VAL - params.QUANTIZE_MIN_VAL
QUANT_SCALE = QUANT_RANGE / 255.0


@dataclass(frozen=True)
class Pca:
    eigen_vectors: npt.NDArray[np.float64]  # (128, 128): rows are output dimensions
    means: npt.NDArray[np.float64]  # (128,)

    @classmethod
    def load(cls, path: Path) -> Pca:
        try:
            with np.load(path) as data:
                vectors = np.asarray(data[params.PCA_EIGEN_VECTORS_NAME], dtype=np.float64)
                means = np.asarray(data[params.PCA_MEANS_NAME], dtype=np.float64).reshape(-1)
        except FileNotFoundError:
            raise ModelError(f"vggish: PCA parameters {path} are missing") from None
        except KeyError as exc:
            raise ModelError(f"{path}: not a VGGish PCA file (lacks {exc})") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read VGGish PCA parameters: {exc}") from None
        size = params.EMBEDDING_SIZE
        if vectors.shape != (size, size) or means.shape != (size,):
            raise ModelError(
                f"{path}: PCA shapes {vectors.shape} and {means.shape},"
                f" expected ({size}, {size}) and ({size},)"
            )
        return cls(vectors, means)

    def postprocess(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        """(n, 128) raw embeddings -> (n, 128) uint8, the AudioSet release format."""
        pca = (embeddings.astype(np.float64) - self.means) @ self.eigen_vectors.T
        clipped = np.clip(pca, params.QUANTIZE_MIN_VAL, params.QUANTIZE_MAX_VAL)
        return ((clipped - params.QUANTIZE_MIN_VAL) * (255.0 / QUANT_RANGE)).astype(np.uint8)


def dequantize(quantized: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """uint8 release features back to [-2, 2] floats (what the head is trained on)."""
    return (quantized.astype(np.float32) * np.float32(QUANT_SCALE)) + np.float32(
        params.QUANTIZE_MIN_VAL
    )
