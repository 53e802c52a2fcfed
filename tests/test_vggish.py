"""The VGGish backend with the real architecture and generated weights.

Google's weights cannot be downloaded here, so a checkpoint with VGGish's variable names
and shapes (written by real TensorFlow in the release's V1 format) goes through the real
converter, and the converted ONNX model is checked against the same network computed by
TensorFlow's own ops. The frontend and the PCA post-processing are checked against the
published recipes, re-implemented independently below.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.models import Clip, SecondOpinion
from earwitness.cloud.secondopinion.backends import BACKENDS, UnavailableBackend, YamnetReference
from earwitness.cloud.secondopinion.vggish import frontend, head
from earwitness.cloud.secondopinion.vggish.backend import VGGish
from earwitness.cloud.secondopinion.vggish.convert import convert, read_checkpoint
from earwitness.cloud.secondopinion.vggish.postprocess import Pca
from earwitness.cloud.secondopinion.vggish.runtime import VggishEmbedder
from earwitness.cloud.secondopinion.worker import Worker
from earwitness.shared import audio
from earwitness.shared.errors import ModelError
from earwitness.shared.evaluate import load_mapping
from tests.conftest import ESC50, MODELS
from tests.test_second_opinion import store_clips

# vggish_slim.define_vggish_slim, written out here rather than taken from the product.
CONVS = [("conv1", 1, 64, True), ("conv2", 64, 128, True),
         ("conv3/conv3_1", 128, 256, False), ("conv3/conv3_2", 256, 256, True),
         ("conv4/conv4_1", 256, 512, False), ("conv4/conv4_2", 512, 512, True)]  # fmt: skip
FCS = [("fc1/fc1_1", 6 * 4 * 512, 4096, True), ("fc1/fc1_2", 4096, 4096, True),
       ("fc2", 4096, 128, False)]  # fmt: skip
CATEGORIES = ["dog", "rain", "siren", "church_bells"]


def generated_weights(seed: int = 7) -> dict[str, np.ndarray]:
    """He-initialised weights with the release's names and shapes (HWIO kernels)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, cin, cout, _ in CONVS:
        out[f"vggish/{name}/weights"] = rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout))
        out[f"vggish/{name}/biases"] = rng.normal(0, 0.01, cout)
    for name, fin, fout, _ in FCS:
        out[f"vggish/{name}/weights"] = rng.normal(0, np.sqrt(2 / fin), (fin, fout))
        out[f"vggish/{name}/biases"] = rng.normal(0, 0.01, fout)
    return {k: v.astype(np.float32) for k, v in out.items()}


def write_v1_checkpoint(weights: dict[str, np.ndarray], path: Path) -> None:
    """What Google released: a TF-Slim model saved by tf.train.Saver, write_version=V1."""
    import tensorflow.compat.v1 as tf1

    graph = tf1.Graph()
    with graph.as_default():
        variables = [
            tf1.get_variable(name, initializer=tf1.constant(value), use_resource=False)
            for name, value in weights.items()
        ]
        variables.append(tf1.get_variable("global_step", initializer=tf1.constant(1234)))
        saver = tf1.train.Saver(variables, write_version=tf1.train.SaverDef.V1)
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            saver.save(session, str(path), write_meta_graph=False)


def tensorflow_reference(weights: dict[str, np.ndarray], examples: np.ndarray) -> np.ndarray:
    """The VGGish stack computed by TensorFlow's ops in its native NHWC layout."""
    import tensorflow as tf

    x = tf.reshape(tf.constant(examples), [-1, 96, 64, 1])
    for name, _cin, _cout, pool in CONVS:
        x = tf.nn.conv2d(x, weights[f"vggish/{name}/weights"], 1, "SAME")
        x = tf.nn.relu(x + weights[f"vggish/{name}/biases"])
        if pool:
            x = tf.nn.max_pool2d(x, 2, 2, "SAME")
    x = tf.reshape(x, [examples.shape[0], -1])
    for name, _fin, _fout, relu in FCS:
        x = tf.matmul(x, weights[f"vggish/{name}/weights"]) + weights[f"vggish/{name}/biases"]
        if relu:
            x = tf.nn.relu(x)
    return np.asarray(x)


def published_examples(wave: np.ndarray) -> np.ndarray:
    """vggish_input.waveform_to_examples via mel_features.py, as published, in float64."""
    window, hop, fft = 400, 160, 512
    count = 1 + (len(wave) - window) // hop
    frames = np.stack([wave[i * hop : i * hop + window] for i in range(count)]).astype(np.float64)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi / window * np.arange(window))
    spectrogram = np.abs(np.fft.rfft(frames * hann, fft))

    def hz_to_mel(hz):  # type: ignore[no-untyped-def]
        return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)

    bins_mel = hz_to_mel(np.linspace(0.0, 8000.0, fft // 2 + 1))
    edges = np.linspace(hz_to_mel(125.0), hz_to_mel(7500.0), 64 + 2)
    mel_weights = np.empty((fft // 2 + 1, 64))
    for i in range(64):
        lower, center, upper = edges[i : i + 3]
        lower_slope = (bins_mel - lower) / (center - lower)
        upper_slope = (upper - bins_mel) / (upper - center)
        mel_weights[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    mel_weights[0, :] = 0.0
    log_mel = np.log(spectrogram @ mel_weights + 0.01)
    n = 1 + (log_mel.shape[0] - 96) // 96
    return np.stack([log_mel[i * 96 : i * 96 + 96] for i in range(n)])


def published_postprocess(emb: np.ndarray, matrix: np.ndarray, means: np.ndarray) -> np.ndarray:
    """vggish_postprocess.Postprocessor.postprocess."""
    pca_applied = np.dot(matrix, (emb.T - means.reshape(-1, 1))).T
    clipped = np.clip(pca_applied, -2.0, 2.0)
    return ((clipped - -2.0) * (255.0 / (2.0 - -2.0))).astype(np.uint8)


def esc50_files(categories: list[str], per: int) -> list[tuple[Path, str]]:
    with (ESC50 / "meta.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return [
        (ESC50 / r["filename"], c)
        for c in categories
        for r in [r for r in rows if r["category"] == c][:per]
    ]


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return generated_weights()


@pytest.fixture(scope="module")
def vggish_dir(tmp_path_factory: pytest.TempPathFactory, weights) -> Path:  # type: ignore[no-untyped-def]
    """A model directory prepared the way a user does it: convert the checkpoint, then
    (as Google did for the release) fit the PCA on embeddings, then train the head."""
    work = tmp_path_factory.mktemp("vggish")
    write_v1_checkpoint(weights, work / "vggish_model.ckpt")
    identity = work / "identity_pca.npz"
    np.savez(identity, pca_eigen_vectors=np.eye(128), pca_means=np.zeros(128))
    model_dir = work / "models"
    convert(work / "vggish_model.ckpt", identity, model_dir)
    for shared_file in MODELS.iterdir():  # a model dir holds every backend's files
        (model_dir / shared_file.name).symlink_to(shared_file.resolve())
    embedder = VggishEmbedder(model_dir)
    sample = np.concatenate(
        [
            embedder.embeddings(frontend.examples(audio.load(p)))
            for p, _ in esc50_files(CATEGORIES, 3)
        ]
    )
    means = sample.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov(sample - means, rowvar=False))
    order = np.argsort(eigval)[::-1]
    whitening = eigvec[:, order].T / np.sqrt(np.maximum(eigval[order], 1e-9))[:, None]
    np.savez(model_dir / "vggish_pca_params.npz", pca_eigen_vectors=whitening, pca_means=means)
    return model_dir


def test_checkpoint_is_read_in_release_format(tmp_path: Path, weights, vggish_dir: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = vggish_dir.parent / "vggish_model.ckpt"
    assert ckpt.is_file() and not Path(f"{ckpt}.index").exists()  # V1: one file, like Google's
    read = read_checkpoint(ckpt)
    assert set(read) == set(weights)  # global_step ignored
    assert all(np.array_equal(read[k], weights[k]) for k in weights)
    # The same variables as .npz convert without TensorFlow to the same network.
    np.savez(tmp_path / "weights.npz", **weights)
    assert all(
        np.array_equal(read_checkpoint(tmp_path / "weights.npz")[k], weights[k]) for k in weights
    )


def test_onnx_model_matches_tensorflow_on_the_same_weights(weights, vggish_dir: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    examples = rng.normal(-4, 2, (3, 96, 64)).astype(np.float32)
    ours = VggishEmbedder(vggish_dir).embeddings(examples)
    expected = tensorflow_reference(weights, examples)
    assert ours.shape == (3, 128) and ours.dtype == np.float32
    scale = np.abs(expected).max()
    assert scale > 1e-3  # the network is not dead: the comparison means something
    np.testing.assert_allclose(ours, expected, atol=1e-4 * scale, rtol=1e-4)
    # Swapping two input frames changes the embedding: the layout is not symmetric by luck.
    swapped = examples.copy()
    swapped[0, [0, 50]] = swapped[0, [50, 0]]
    assert not np.allclose(
        VggishEmbedder(vggish_dir).embeddings(swapped)[0], ours[0], atol=1e-3 * scale
    )


def test_frontend_matches_published_recipe_on_a_sine() -> None:
    t = np.arange(int(16000 * 3.1)) / 16000
    wave = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    ours = frontend.examples(wave)
    published = published_examples(wave.astype(np.float64))
    assert ours.shape == published.shape == (3, 96, 64)
    np.testing.assert_allclose(ours, published, atol=2e-3)
    # 1 kHz lands in the mel band whose centre is nearest 1 kHz.
    centres = 700 * (
        np.exp(
            np.linspace(1127 * np.log(1 + 125 / 700), 1127 * np.log(1 + 7500 / 700), 66)[1:-1]
            / 1127
        )
        - 1
    )
    assert int(np.argmax(ours[1].mean(axis=0))) == int(np.argmin(np.abs(centres - 1000)))


def test_short_clip_is_padded_to_one_example() -> None:
    assert frontend.examples(np.full(8000, 0.1, np.float32)).shape == (1, 96, 64)


def test_pca_postprocessing_matches_published_code(vggish_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    matrix, means = rng.normal(0, 0.5, (128, 128)), rng.normal(0, 1, 128)
    np.savez(tmp_path / "pca.npz", pca_eigen_vectors=matrix, pca_means=means)
    emb = rng.normal(0, 3, (10, 128)).astype(np.float32)
    ours = Pca.load(tmp_path / "pca.npz").postprocess(emb)
    assert ours.dtype == np.uint8 and ours.shape == (10, 128)
    np.testing.assert_array_equal(ours, published_postprocess(emb, matrix, means))
    assert {0, 255} <= set(np.unique(ours))  # values beyond +-2 are clipped, not wrapped
    # An embedding equal to the means maps to the middle of the byte range.
    assert set(
        Pca.load(tmp_path / "pca.npz").postprocess(means[None, :].astype(np.float32))[0]
    ) == {127}


def test_converter_names_what_is_wrong(tmp_path: Path, weights) -> None:  # type: ignore[no-untyped-def]
    broken = dict(weights)
    del broken["vggish/conv3/conv3_2/biases"]
    np.savez(tmp_path / "missing.npz", **broken)
    with pytest.raises(ModelError, match="'vggish/conv3/conv3_2/biases' is missing"):
        read_checkpoint(tmp_path / "missing.npz")
    broken = dict(weights, **{"vggish/fc2/weights": np.zeros((4096, 64), np.float32)})
    np.savez(tmp_path / "shape.npz", **broken)
    with pytest.raises(ModelError, match=r"'vggish/fc2/weights' has shape \(4096, 64\)"):
        read_checkpoint(tmp_path / "shape.npz")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable TensorFlow checkpoint"):
        read_checkpoint(tmp_path / "junk.ckpt")
    np.savez(tmp_path / "pca.npz", something_else=np.eye(128))
    with pytest.raises(ModelError, match="not a VGGish PCA file"):
        convert(tmp_path / "shape.npz", tmp_path / "pca.npz", tmp_path / "out")


@pytest.fixture(scope="module")
def trained_dir(vggish_dir: Path, class_map) -> Path:  # type: ignore[no-untyped-def]
    embedder = VggishEmbedder(vggish_dir)
    features, targets, classes = head.esc50_training_set(
        embedder, ESC50, load_mapping(class_map), class_map, CATEGORIES
    )
    trained = head.fit(features, targets, classes)
    assert sorted(classes) == sorted(["Dog", "Rain", "Siren", "Church bell"])
    # Random conv features still separate four very different sounds on the training set.
    assert trained.train_accuracy >= 0.8, trained.train_accuracy
    head.save(trained, vggish_dir / "vggish_head.onnx", "ESC-50 (test subset)")
    return vggish_dir


def test_backend_scores_clips_on_the_audioset_vocabulary(trained_dir: Path, class_map) -> None:  # type: ignore[no-untyped-def]
    backend = VGGish(trained_dir)
    assert backend.model_id.startswith("vggish@") and "+head@" in backend.model_id
    right = 0
    files = esc50_files(CATEGORIES, 5)
    for path, category in files:
        opinion = backend.score(audio.load(path))
        assert opinion.scores.shape == (len(class_map),)
        assert opinion.label in {"Dog", "Rain", "Siren", "Church bell"}
        assert 0.0 <= opinion.score <= 1.0 and opinion.label_index is not None
        right += opinion.label == class_map[load_mapping(class_map)[category][0]].name
    assert right >= 0.7 * len(files)
    siren = backend.score(audio.load(esc50_files(["siren"], 1)[0][0]))
    assert "alarm" in siren.groups


def test_without_files_the_backend_says_what_is_missing(tmp_path: Path, vggish_dir: Path) -> None:
    with pytest.raises(
        UnavailableBackend, match=r"vggish\.onnx is missing .*earwitness vggish convert"
    ):
        VGGish(tmp_path)
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("vggish.onnx", "vggish_pca_params.npz"):
        (partial / name).symlink_to(vggish_dir / name)
    with pytest.raises(UnavailableBackend, match=r"vggish_head\.onnx is missing .*train-head"):
        BACKENDS["vggish"](partial)


def test_worker_runs_vggish_beside_the_reference(
    engine, tmp_path: Path, trained_dir: Path, patch_model, class_map
) -> None:  # type: ignore[no-untyped-def]
    files = esc50_files(["dog", "siren"], 2)
    store_clips(
        engine, tmp_path / "clips", patch_model, class_map, [audio.load(p) for p, _ in files]
    )
    backends = [YamnetReference(MODELS), VGGish(trained_dir)]
    worker = Worker(engine, FileClipStore(tmp_path / "clips"), backends)
    while worker.run_once(limit=2):
        pass
    assert worker.processed == len(files) and worker.failed == 0
    with engine.connect() as conn:
        opinions = conn.execute(select(SecondOpinion)).all()
        statuses = conn.execute(select(Clip.status)).scalars().all()
    assert set(statuses) == {"done"}
    by_backend = {
        b: [o for o in opinions if o.backend == b] for b in ("yamnet-reference", "vggish")
    }
    assert len(by_backend["vggish"]) == len(by_backend["yamnet-reference"]) == len(files)
    assert all(o.model_id.startswith("vggish@") for o in by_backend["vggish"])
    assert all(o.edge_label and o.group_scores is not None for o in by_backend["vggish"])


def test_cli_worker_carries_on_without_vggish_and_uses_it_when_present(
    tmp_path: Path, trained_dir: Path, patch_model, class_map
) -> None:  # type: ignore[no-untyped-def]
    from earwitness.cloud.db.engine import make_engine
    from earwitness.cloud.db.migrate import upgrade
    from tests.test_cli import run

    wave = audio.load(esc50_files(["dog"], 1)[0][0])
    runs = [(MODELS, ["yamnet-reference"]), (trained_dir, ["vggish", "yamnet-reference"])]
    for n, (model_dir, expected) in enumerate(runs):
        url = f"sqlite:///{tmp_path}/run{n}.db"
        engine = make_engine(url)
        upgrade(engine)
        clips_dir = tmp_path / f"clips{n}"
        store_clips(engine, clips_dir, patch_model, class_map, [wave])
        proc = run(
            *("second-opinion", "--backends", "yamnet-reference,vggish", "--once"),
            *("--database-url", url, "--model-dir", str(model_dir)),
            env={"EARWITNESS_CLIPS__URL": str(clips_dir)},
        )
        assert proc.returncode == 0, proc.stderr
        assert f"backends {', '.join(reversed(expected))}\n" in proc.stdout
        assert "processed 1, failed 0" in proc.stdout
        assert ("vggish.onnx is missing" in proc.stderr) == (model_dir == MODELS)
        with engine.connect() as conn:
            assert sorted(conn.execute(select(SecondOpinion.backend)).scalars()) == expected
        engine.dispose()
