"""Audio sources: microphone, file/directory replay, raw PCM on stdin, ffmpeg streams.

Every source yields float32 mono chunks at 16 kHz. Sources run in the capture thread and
must never wait on anything but the audio itself.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import soxr

from earwitness.edge.config import SourceSettings
from earwitness.shared import audio
from earwitness.shared.audio import SAMPLE_RATE, Waveform
from earwitness.shared.errors import AudioError, ConfigError

log = logging.getLogger(__name__)


class AudioSource(Protocol):
    name: str
    live: bool  # False: audio can wait for inference (fast file replay), nothing is dropped

    def chunks(self, stop: threading.Event) -> Iterator[Waveform]: ...


class FileSource:
    """Replays a file or every audio file of a directory, at real-time pace or at once."""

    def __init__(
        self, path: Path, realtime: bool, loop: bool, chunk_ms: int, speed: float = 1.0
    ) -> None:
        self.files = audio.find_audio_files([path])
        if not path.exists():
            raise ConfigError(f"source.path: {path} does not exist")
        if not self.files:
            raise ConfigError(f"source.path: no audio files in {path}")
        self.realtime = realtime
        self.speed = speed  # paced at N x real time (realtime only)
        self.loop = loop
        # Replaying as fast as possible: bigger chunks, fewer hand-offs between threads.
        self.chunk = int(SAMPLE_RATE * (chunk_ms if realtime else max(chunk_ms, 1000)) / 1000)
        self.name = f"file:{path}"
        # Faster than real time nothing is lost by waiting for inference: not live.
        self.live = realtime and speed <= 1.0
        self.skipped: list[str] = []

    @property
    def duration_s(self) -> float | None:
        """Seconds of audio in one pass over the files (None when looping forever);
        from the file headers, without decoding."""
        if self.loop:
            return None
        import soundfile as sf

        total = 0.0
        for path in self.files:
            try:
                total += float(sf.info(str(path)).duration)
            except (RuntimeError, sf.LibsndfileError):  # unreadable: skipped when played
                continue
        return total

    def chunks(self, stop: threading.Event) -> Iterator[Waveform]:
        t0 = time.monotonic()
        emitted = 0
        while not stop.is_set():
            played = False
            for path in self.files:
                try:
                    wave = audio.load(path)
                except AudioError as exc:
                    log.error("skipping unreadable file: %s", exc)
                    self.skipped.append(str(path))
                    continue
                played = True
                for start in range(0, wave.size, self.chunk):
                    if stop.is_set():
                        return
                    piece = wave[start : start + self.chunk]
                    if self.realtime:
                        due = t0 + emitted / SAMPLE_RATE / self.speed
                        delay = due - time.monotonic()
                        if delay > 0:
                            stop.wait(delay)
                    emitted += piece.size
                    yield piece
            if not self.loop or not played:
                return


class PcmStreamSource:
    """Raw little-endian int16 PCM from a byte stream (stdin, an ffmpeg pipe)."""

    def __init__(
        self, stream: IO[bytes], rate: int, channels: int, chunk_ms: int, name: str
    ) -> None:
        self.stream = stream
        self.rate = rate
        self.channels = channels
        self.frame_bytes = 2 * channels
        self.chunk_bytes = max(1, int(rate * chunk_ms / 1000)) * self.frame_bytes
        self.name = name
        self.live = True  # a pipe from arecord or ffmpeg: blocking it would lose audio upstream
        self._resampler = (
            soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            if rate != SAMPLE_RATE
            else None
        )

    def chunks(self, stop: threading.Event) -> Iterator[Waveform]:
        leftover = b""
        while not stop.is_set():
            data = self.stream.read(self.chunk_bytes)
            if not data:
                break
            data = leftover + data
            usable = len(data) - len(data) % self.frame_bytes
            leftover = data[usable:]
            pcm = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self.channels)
            mono = audio.to_mono(audio.to_float32(pcm, self.name), self.name)
            if self._resampler is not None:
                mono = self._resampler.resample_chunk(mono)
            if mono.size:
                yield np.ascontiguousarray(mono, dtype=np.float32)
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield np.asarray(tail, dtype=np.float32)


class StreamSource:
    """An RTSP/HTTP/any-ffmpeg-input stream, decoded by an ffmpeg subprocess to 16 kHz."""

    def __init__(self, url: str, chunk_ms: int) -> None:
        self.ffmpeg = shutil.which("ffmpeg")
        if self.ffmpeg is None:
            raise ConfigError("source.kind 'stream' needs ffmpeg on PATH (apt-get install ffmpeg)")
        self.url = url
        self.chunk_ms = chunk_ms
        self.name = f"stream:{url}"
        self.live = True

    def chunks(self, stop: threading.Event) -> Iterator[Waveform]:
        cmd = [
            str(self.ffmpeg),
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            self.url,
            "-vn",
            "-ac",
            "1",
            "-ar",
            str(SAMPLE_RATE),
            "-f",
            "s16le",
            "-",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            yield from PcmStreamSource(
                proc.stdout, SAMPLE_RATE, 1, self.chunk_ms, self.name
            ).chunks(stop)
        finally:
            proc.terminate()
            proc.wait(5)


class MicSource:
    """A microphone through PortAudio (sounddevice, imported only when used)."""

    def __init__(self, device: str | int | None, rate: int, channels: int, chunk_ms: int) -> None:
        try:
            import sounddevice  # noqa: F401
        except (ImportError, OSError) as exc:
            raise ConfigError(
                f"source.kind 'mic' needs sounddevice and PortAudio ({exc});"
                " pip install 'earwitness[mic]' and apt-get install libportaudio2"
            ) from exc
        self.device = device
        self.rate = rate
        self.channels = channels
        self.block = int(rate * chunk_ms / 1000)
        self.name = f"mic:{device if device is not None else 'default'}"
        self.live = True

    def chunks(self, stop: threading.Event) -> Iterator[Waveform]:
        import queue

        import sounddevice as sd

        blocks: queue.Queue[np.ndarray[Any, Any]] = queue.Queue(maxsize=100)

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            if status:
                log.warning("microphone: %s", status)
            try:
                blocks.put_nowait(indata.copy())
            except queue.Full:
                log.warning("microphone: capture queue full, block dropped")

        resampler = (
            soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            if self.rate != SAMPLE_RATE
            else None
        )
        with sd.InputStream(
            device=self.device,
            channels=self.channels,
            samplerate=self.rate,
            blocksize=self.block,
            dtype="float32",
            callback=callback,
        ):
            while not stop.is_set():
                try:
                    block = blocks.get(timeout=0.5)
                except queue.Empty:
                    continue
                mono = audio.to_mono(block, self.name)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono)
                yield np.ascontiguousarray(mono, dtype=np.float32)


def open_source(cfg: SourceSettings) -> AudioSource:
    if cfg.kind == "file":
        assert cfg.path is not None
        if cfg.path == "-":
            return PcmStreamSource(
                sys.stdin.buffer, cfg.sample_rate, cfg.channels, cfg.chunk_ms, "stdin"
            )
        return FileSource(Path(cfg.path), cfg.realtime, cfg.loop, cfg.chunk_ms, cfg.speed)
    if cfg.kind == "stdin":
        return PcmStreamSource(
            sys.stdin.buffer, cfg.sample_rate, cfg.channels, cfg.chunk_ms, "stdin"
        )
    if cfg.kind == "stream":
        assert cfg.path is not None
        return StreamSource(cfg.path, cfg.chunk_ms)
    return MicSource(cfg.device, cfg.sample_rate, cfg.channels, cfg.chunk_ms)
