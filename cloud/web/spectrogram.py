"""Log-mel spectrogram images of stored clips, computed with the project's own YAMNet
frontend (what the model saw), encoded as PNG with numpy and zlib alone (no imaging
library in the cloud image).

Rows are the 64 mel bands (125-7500 Hz, low at the bottom), columns the 10 ms frames.
Colours run from dark (quiet) to bright (loud) over a fixed log-mel range, so two images
compare at a glance.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from earwitness.shared import audio
from earwitness.shared.frontend import log_mel, magnitude_spectrogram

ROW_SCALE = 2  # each mel band is two pixels high: 128 px in all
LOG_MEL_FLOOR = -6.9  # log(0.001): silence
LOG_MEL_CEILING = 3.0  # a loud clip's strongest bands
CACHE_ENTRIES = 256  # ~30 kB each
# Anchors of a dark-to-bright scale (near magma): position, R, G, B.
_ANCHORS = np.array(
    [
        [0.00, 0, 0, 4],
        [0.25, 81, 18, 124],
        [0.50, 183, 55, 121],
        [0.75, 252, 137, 97],
        [1.00, 252, 253, 191],
    ],
    dtype=np.float64,
)
_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), _ANCHORS[:, 0], _ANCHORS[:, c]) for c in (1, 2, 3)],
    axis=1,
).astype(np.uint8)


def _png(rgb: npt.NDArray[np.uint8]) -> bytes:
    height, width, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def render(flac: bytes) -> bytes:
    """PNG of a clip's log-mel spectrogram."""
    samples = audio.decode_bytes(flac, "clip")
    if samples.size < 400:
        samples = np.pad(samples, (0, 400 - samples.size))
    mel = log_mel(magnitude_spectrogram(samples))  # frames x 64
    level = (mel - LOG_MEL_FLOOR) / (LOG_MEL_CEILING - LOG_MEL_FLOOR)
    index = np.clip(level * 255, 0, 255).astype(np.uint8)
    image = _LUT[index.T[::-1]]  # bands x frames, low frequencies at the bottom
    return _png(np.repeat(image, ROW_SCALE, axis=0))


class SpectrogramCache:
    """The newest images by clip sha256: a clip's audio never changes."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str) -> bytes | None:
        with self._lock:
            png = self._items.get(sha256)
            if png is not None:
                self._items.move_to_end(sha256)
            return png

    def put(self, sha256: str, png: bytes) -> None:
        with self._lock:
            self._items[sha256] = png
            self._items.move_to_end(sha256)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
