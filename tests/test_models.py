"""Model download path against a local HTTP server serving the real file from ../shared."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from earwitness.shared import model_registry as models
from earwitness.shared.errors import ModelError
from tests.conftest import MODELS

SPEC = models.REGISTRY["yamnet-class-map"]
MODEL_SPEC = models.REGISTRY["yamnet-int8"]


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "ok"

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        body = (MODELS / name).read_bytes()
        if self.mode == "corrupt":
            body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.mode == "truncated":
            self.wfile.write(body[: len(body) // 2])  # connection closes early
            return
        if self.mode == "short":
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"mode": "ok"})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_fetch_model_and_verify(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, _ = server
    seen: list[int] = []
    path = models.fetch(
        "yamnet-int8",
        tmp_path / "cache",
        url=f"{base}/{MODEL_SPEC.filename}",
        progress=lambda done, total: seen.append(done),
    )
    assert path == tmp_path / "cache" / MODEL_SPEC.filename
    assert models.verify(MODEL_SPEC, tmp_path / "cache") == path
    assert seen[-1] == MODEL_SPEC.size
    assert _leftovers(tmp_path / "cache") == [MODEL_SPEC.filename]


def test_fetch_via_mirror_env(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    base, _ = server
    monkeypatch.setenv(models.MIRROR_ENV, base + "/")
    path = models.fetch("yamnet-class-map", tmp_path)
    assert path.read_bytes() == (MODELS / SPEC.filename).read_bytes()


def test_corrupted_download_is_rejected(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, handler = server
    handler.mode = "corrupt"
    with pytest.raises(ModelError, match="checksum mismatch.*file rejected"):
        models.fetch("yamnet-class-map", tmp_path, url=f"{base}/{SPEC.filename}")
    assert _leftovers(tmp_path) == []  # nothing half-written left behind


@pytest.mark.parametrize("mode", ["truncated", "short"])
def test_truncated_download_is_rejected(server, tmp_path: Path, mode: str) -> None:  # type: ignore[no-untyped-def]
    base, handler = server
    handler.mode = mode
    with pytest.raises(ModelError, match="yamnet-class-map: download from .* (truncated|failed)"):
        models.fetch("yamnet-class-map", tmp_path, url=f"{base}/{SPEC.filename}")
    assert _leftovers(tmp_path) == []


def test_existing_corrupt_file_is_replaced(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, _ = server
    (tmp_path / SPEC.filename).write_bytes(b"x" * SPEC.size)
    with pytest.raises(ModelError, match="sha256"):
        models.verify(SPEC, tmp_path)
    models.fetch("yamnet-class-map", tmp_path, url=f"{base}/{SPEC.filename}")
    assert models.verify(SPEC, tmp_path)


def test_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="download from http://127.0.0.1:9/x failed"):
        models.fetch("yamnet-class-map", tmp_path, url="http://127.0.0.1:9/x")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model directory .*nowhere does not exist"):
        models.verify(SPEC, tmp_path / "nowhere")


def test_model_without_public_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(models.MIRROR_ENV, raising=False)
    with pytest.raises(ModelError, match="no public download URL; copy yamnet_waveform.tflite"):
        models.fetch("yamnet-waveform", tmp_path)


def test_unknown_model() -> None:
    with pytest.raises(ModelError, match="unknown model 'resnet'; known: yamnet-int8"):
        models.get_spec("resnet")


def test_model_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(models.MODEL_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.model_dir() == tmp_path / "earwitness" / "models"
    monkeypatch.setenv(models.MODEL_DIR_ENV, "/srv/models")
    assert models.model_dir() == Path("/srv/models")


def test_shared_files_match_registry() -> None:
    for spec in models.REGISTRY.values():
        assert models.verify(spec, MODELS)
