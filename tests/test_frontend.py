from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from earwitness.shared import frontend
from earwitness.shared.frontend import StreamingFrontend, padded_length, patches


def test_mel_matrix_shape_and_dc_bin() -> None:
    mel = frontend.mel_matrix()
    assert mel.shape == (257, 64)
    assert not mel[0].any()  # DC bin carries no weight
    assert (mel >= 0).all()
    # Every band gets weight from at least one bin between 125 and 7500 Hz.
    hz = np.linspace(0, 8000, 257)
    assert (mel.sum(axis=0) > 0).all()
    assert not mel[(hz < 125) | (hz > 7500)].any()


def test_padding_matches_reference_rule() -> None:
    assert padded_length(1) == 15600
    assert padded_length(15600) == 15600
    assert padded_length(15601) == 15600 + 7680
    assert len(patches(np.zeros(80000, np.float32))) == 10  # 5 s -> 10 windows


def test_speech_vector_is_speech(patch_model, class_map, test_audio) -> None:  # type: ignore[no-untyped-def]
    (only,) = patches(test_audio)
    result = patch_model.run_patch(only.features)
    assert class_map[int(result.scores.argmax())].name == "Speech"
    assert result.scores.max() > 0.8


def test_log_mel_close_to_corals_reference_patch(model_dir, test_audio) -> None:  # type: ignore[no-untyped-def]
    # Coral's C frontend computed this patch from int16/8192 scaling (README: max abs ~0.5).
    coral = np.fromfile(model_dir / "yamnet_test_spectra.bin", dtype="<f4").reshape(96, 64)
    ours = patches(test_audio * 4)[0].features
    assert np.abs(ours - coral).max() < 0.6
    assert np.abs(ours - coral).mean() < 0.05


def test_magnitude_matches_tensorflow_complexabs(model_dir, test_audio) -> None:  # type: ignore[no-untyped-def]
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        str(model_dir / "yamnet_waveform.tflite"),
        experimental_preserve_all_tensors=True,
        # With XNNPACK on, intermediate tensors read as garbage.
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], test_audio)
    it.invoke()
    (detail,) = [d for d in it.get_tensor_details() if "ComplexAbs" in d["name"]]
    tf_magnitude = it.get_tensor(detail["index"])
    ours = frontend.magnitude_spectrogram(test_audio)
    assert ours.shape == tf_magnitude.shape == (96, 257)
    assert np.abs(ours - tf_magnitude).max() < 1e-4


@settings(max_examples=30, deadline=None)
@given(
    seconds=st.floats(0.01, 4.0),
    chunk_seed=st.integers(0, 2**32 - 1),
    max_chunk=st.sampled_from([1, 7, 160, 1000, 7680, 20000]),
)
def test_streaming_equals_whole_file(seconds: float, chunk_seed: int, max_chunk: int) -> None:
    rng = np.random.default_rng(chunk_seed)
    wave = (0.1 * rng.standard_normal(int(seconds * 16000) + 1)).astype(np.float32)
    whole = patches(wave)
    fe = StreamingFrontend()
    streamed = []
    i = 0
    while i < wave.size:
        n = int(rng.integers(1, max_chunk + 1))
        streamed += fe.push(wave[i : i + n])
        i += n
    streamed += fe.flush()
    assert len(streamed) == len(whole) >= 1
    for a, b in zip(whole, streamed, strict=True):
        assert a.start_sample == b.start_sample
        assert np.array_equal(a.features, b.features)
