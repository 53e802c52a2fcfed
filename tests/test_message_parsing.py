"""Parsing and naming of device messages (shared/messages.py): duplicate keys refused by
one strict decoder built once and shared (exactly the documents with a duplicate key
anywhere, whatever the strings hold), and message ids equal to the documented uuid5."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from earwitness.shared.messages import _STRICT_JSON, MessageError, decode

STRINGS = ["a", "b", "a:b", "::", "x: y", "", "ünï:", "🎧:", "k"]


def reference_has_duplicate(text: str) -> bool:
    found = False

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        if len({k for k, _ in pairs}) != len(pairs):
            found = True
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return found


def random_text(rng: random.Random, depth: int = 0) -> str:
    """A JSON text written by hand (so keys can repeat), strings with colons and, now and
    then, escapes."""

    def string() -> str:
        s = rng.choice(STRINGS)
        if rng.random() < 0.1:
            return json.dumps(s + rng.choice(['"', "\\", "\n", ":"]))  # escaped
        return json.dumps(s, ensure_ascii=False)

    roll = rng.random()
    if depth > 3 or roll < 0.3:
        return rng.choice([string(), "1", "-2.5", "true", "null"])
    if roll < 0.5:
        items = [random_text(rng, depth + 1) for _ in range(rng.randint(0, 3))]
        return "[" + ",".join(items) + "]"
    keys = [rng.choice(STRINGS) for _ in range(rng.randint(0, 4))]
    sep = rng.choice([":", " : ", ":\n"])
    return (
        "{"
        + ",".join(
            json.dumps(k, ensure_ascii=False) + sep + random_text(rng, depth + 1) for k in keys
        )
        + "}"
    )


def test_generated_documents_refused_exactly_when_a_key_repeats() -> None:
    rng = random.Random(17)
    refused = accepted = 0
    for _ in range(20_000):
        text = random_text(rng)
        expected = reference_has_duplicate(text)
        try:
            assert _STRICT_JSON.decode(text) == json.loads(text)
            got = False
        except MessageError as exc:
            assert "duplicate key" in str(exc)
            got = True
        assert got == expected, text
        refused += got
        accepted += not got
    assert refused > 1_000 and accepted > 1_000  # both kinds were generated


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1,"a":2}',
        '{"a":"x:y","a":"x:y"}',  # the dropped value's colons
        '{"o":{"k":1,"k":1}}',
        '{"l":[{"k":1},{"k":2,"k":3}]}',
        '{"a:":1,"a:":2}',
        '{"a":"\\u003a","a":1}',  # an escaped colon: the hook decides
        '{"\\u0061":1,"a":2}',  # the same key, once escaped
    ],
)
def test_duplicate_keys_refused(text: str) -> None:
    with pytest.raises(MessageError, match="duplicate key"):
        _STRICT_JSON.decode(text)


def test_decode_refuses_a_duplicated_seq() -> None:
    """Where it matters: a second seq that a later reader would take instead."""
    payload = (
        b'{"v":1,"kind":"heartbeat","id":"x","site":"s","device":"d","ts":"2026-12-07T12:00:00Z",'
        b'"epoch":"abcdefgh12","seq":1,"seq":2}'
    )
    with pytest.raises(MessageError, match="duplicate key 'seq'"):
        decode("earwitness/v1/s/d/heartbeat", payload)


def test_message_id_is_the_documented_uuid5() -> None:
    """Devices already in the field derive ids with uuid5; a re-sent message must keep its
    id across versions, so the hand-written derivation must equal it for any input."""
    import uuid

    from earwitness.shared.messages import message_id

    rng = random.Random(5)
    for _ in range(5_000):
        device = "".join(rng.choice("ab-_9üé🎧") for _ in range(rng.randint(1, 40)))
        epoch, seq = f"{rng.getrandbits(64):x}", rng.randint(0, 2**62)
        name = f"earwitness:{device}/{epoch}/{seq}"
        assert message_id(device, epoch, seq) == uuid.uuid5(uuid.NAMESPACE_URL, name).hex


def test_encode_acks_writes_what_the_model_writes() -> None:
    """Acks written directly are byte for byte the model's JSON (devices in the field parse
    them), and what the model refuses is still refused."""
    from datetime import UTC, datetime, timedelta

    from pydantic import ValidationError

    from earwitness.shared.messages import MAX_SEQ, AckMessage, encode_acks

    rng = random.Random(9)
    alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    base = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    for i in range(300):
        ts = base + timedelta(microseconds=rng.randint(0, 10**12) * (i % 3))
        acks = [
            (
                "".join(rng.choice(alnum) for _ in range(rng.randint(8, 32))),
                rng.choice([-1, 0, 1, rng.randint(0, MAX_SEQ), MAX_SEQ]),
            )
            for _ in range(5)
        ]
        got = encode_acks(acks, ts)
        want = [AckMessage(epoch=e, seq=q, ts=ts).model_dump_json().encode() for e, q in acks]
        assert got == want
    for epoch, seq in [("short", 1), ("x" * 33, 1), ("abcdefgh", -2), ("abcdefgh", MAX_SEQ + 1)]:
        with pytest.raises(ValidationError):
            encode_acks([(epoch, seq)], base)
    for epoch in ("ünïcødé12", 'ab"cd\\efgh'):  # not plain: the model writes (and escapes) it
        assert encode_acks([(epoch, 3)], base) == [
            AckMessage(epoch=epoch, seq=3, ts=base).model_dump_json().encode()
        ]
