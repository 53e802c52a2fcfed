"""One bad device never stops the rest: poison messages are dead-lettered with a reason
and the next message is stored at once (real Mosquitto, SQLite and MariaDB). The schema's
limits are the columns' limits, checked by walking the ORM."""

from __future__ import annotations

import json
import time
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from sqlalchemy import JSON, BigInteger, Float, Integer, SmallInteger, String, func, select, text

from earwitness.cloud.db.models import DeadLetter, Event, Heartbeat, Inference, table_of
from earwitness.cloud.ingest import rows
from earwitness.shared import messages
from earwitness.shared.topics import Kind
from tests.factories import Device, wire
from tests.ingest_helpers import Publisher, ingest_settings, running_ingest, wait_for
from tests.services import unique

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def apply(msg: dict[str, Any]) -> None:
        target: Any = msg
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return apply


def _drop(key: str) -> Mutation:
    return lambda msg: msg.pop(key)


# (kind, name, mutation of a valid message's JSON). Every one must be dead-lettered.
POISON: list[tuple[str, str, Mutation]] = [
    ("inference", "seq -1", _set("seq", -1)),
    ("inference", "seq above MAX_SEQ", _set("seq", messages.MAX_SEQ + 1)),
    ("inference", "seq 2**63", _set("seq", 2**63)),
    ("inference", "seq as a string", _set("seq", "0")),
    ("inference", "seq false", _set("seq", False)),
    ("inference", "v true", _set("v", True)),
    ("inference", "v 1.0", _set("v", 1.0)),
    ("inference", "no v", _drop("v")),
    ("inference", "ts as epoch seconds", _set("ts", 1795500000)),
    ("inference", "ts without offset", _set("ts", "2026-11-25T08:00:00")),
    ("inference", "ts year 1", _set("ts", "0001-01-01T00:00:00Z")),
    ("inference", "ts year 9999", _set("window_start", "9999-12-31T23:59:59Z")),
    ("inference", "dbfs as a string", _set("dbfs", "-30")),
    ("inference", "dbfs below range", _set("dbfs", -200.1)),
    ("inference", "inference_ms above range", _set("inference_ms", 60_000.1)),
    ("inference", "window_s 0", _set("window_s", 0)),
    ("inference", "score above 1", _set("top.0.score", 1.01)),
    ("inference", "class index above range", _set("top.0.index", 10_001)),
    ("inference", "label one char too long", _set("top.0.name", "x" * 129)),
    ("inference", "mid one char too long", _set("top.0.mid", "m" * 33)),
    ("inference", "model one char too long", _set("model", "m" * 81)),
    ("inference", "group name 65 chars", _set("groups", {"g" * 65: 0.5})),
    ("inference", "group name with markup", _set("groups", {"<img src=x>": 0.5})),
    ("inference", "message id 65 chars", _set("id", "a" * 65)),
    ("inference", "epoch 33 chars", _set("epoch", "e" * 33)),
    ("inference", "latitude 91", _set("location", {"lat": 91.0, "lon": 0.0})),
    ("inference", "extra field", _set("admin", True)),
    ("event", "windows 2**31", _set("windows", 2**31)),
    ("event", "group 65 chars", _set("group", "g" * 65)),
    ("event", "label 129 chars", _set("label", "l" * 129)),
    ("heartbeat", "outbox_min_seq 2**63+1", _set("outbox_min_seq", 2**63 + 1)),
    ("heartbeat", "counter 2**63", _set("outbox_rows", 2**63)),
    ("heartbeat", "version 41 chars", _set("version", "v" * 41)),
]
# Raw JSON the json module would not produce from a dict.
RAW_POISON = [
    ("NaN dbfs", lambda s: s.replace('"dbfs":-23.5', '"dbfs":NaN')),
    ("Infinity dbfs", lambda s: s.replace('"dbfs":-23.5', '"dbfs":Infinity')),
    ("duplicate key", lambda s: s.replace('"dbfs":-23.5', '"dbfs":-23.5,"dbfs":-99')),
    ("duplicate nested key", lambda s: s.replace('"lat":48.2082', '"lat":48.2082,"lat":0')),
    ("truncated JSON", lambda s: s[: len(s) // 2]),
]


def _count(engine: Any, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _valid(dev: Device, kind: str, seq: int) -> dict[str, Any]:
    build = {"inference": dev.inference, "event": dev.event, "heartbeat": dev.heartbeat}[kind]
    return json.loads(wire(build(seq)))  # type: ignore[operator]


@pytest.mark.mqtt
def test_poison_is_dead_lettered_and_the_next_message_stored_within_2_s(
    db_url: str, engine: Any, tmp_path: Path
) -> None:
    site = unique("s")
    bad, good = Device(site, "bad"), Device(site, "good")
    pub = Publisher()
    payloads: list[tuple[str, str, bytes]] = []
    for i, (kind, name, mutate) in enumerate(POISON):
        msg = _valid(bad, kind, i)
        mutate(msg)
        payloads.append((name, bad.topic(Kind(kind)), json.dumps(msg).encode()))
    base = wire(bad.inference(len(POISON))).decode()
    for name, edit in RAW_POISON:
        payload = edit(base)
        assert payload != base, name
        payloads.append((name, bad.topic(Kind.INFERENCE), payload.encode()))
    with running_ingest(ingest_settings(db_url, site), tmp_path / "clips"):
        for seq, (name, topic, payload) in enumerate(payloads):
            dead_before = _count(engine, DeadLetter)
            pub.publish(topic, payload)
            pub.publish(good.topic(Kind.INFERENCE), wire(good.inference(seq)))
            t0 = time.monotonic()
            wait_for(lambda s=seq: _count(engine, Inference) == s + 1, 2.0, f"canary after {name}")
            assert time.monotonic() - t0 < 2.0
            wait_for(lambda n=dead_before: _count(engine, DeadLetter) == n + 1, 2.0, name)
    with engine.connect() as conn:
        errors = list(conn.execute(select(DeadLetter.error)).scalars())
        stored_bad = conn.execute(
            select(func.count()).select_from(Inference).where(Inference.device_id == "bad")
        ).scalar_one()
    assert stored_bad == 0
    assert len(errors) == len(payloads) and all(errors), "every dead letter says why"
    pub.close()


@pytest.mark.mqtt
def test_a_message_the_database_refuses_is_found_and_dead_lettered(
    db_url: str, engine: Any, tmp_path: Path
) -> None:
    """The schema cannot know every rule a database enforces: here the test database
    refuses dbfs <= -150 (a CHECK constraint or trigger). The batch is split until that
    message stands alone; it is dead-lettered with the database's reason, the other 49
    are stored, and the device's ack still reaches the end."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER ew_test_refuse BEFORE INSERT ON inferences"
                    " WHEN NEW.dbfs <= -150 BEGIN SELECT RAISE(ABORT, 'dbfs refused'); END"
                )
            )
        else:
            conn.execute(
                text("ALTER TABLE inferences ADD CONSTRAINT ew_test_refuse CHECK (dbfs > -150)")
            )
    site = unique("s")
    dev, other = Device(site, "dev1"), Device(site, "dev2")
    pub = Publisher()
    pub.watch_acks(site)
    items = []
    for seq in range(50):
        msg = dev.inference(seq)
        payload = wire(msg)
        if seq == 17:
            payload = payload.replace(b'"dbfs":-23.5', b'"dbfs":-160.0')
        items.append((dev.topic(Kind.INFERENCE), payload))
        items.append((other.topic(Kind.INFERENCE), wire(other.inference(seq))))
    with running_ingest(ingest_settings(db_url, site, batch_ms=300), tmp_path / "clips") as svc:
        pub.publish_many(items)
        ack = f"earwitness/v1/{site}/dev1/ack"
        wait_for(lambda: pub.ack_seq(ack) == 49, 10.0, "dev1 acknowledged to 49")
        assert svc.metrics.total("dead_letters_total") == 1
    assert _count(engine, Inference) == 99
    with engine.connect() as conn:
        (error,) = conn.execute(select(DeadLetter.error)).scalars()
    assert error.startswith("database refused the data") and "refuse" in error.lower()
    pub.close()


# -- the schema's limits are the columns' limits -------------------------------------------

_INT_RANGE = {
    SmallInteger: 2**15 - 1,
    Integer: 2**31 - 1,
    BigInteger: 2**63 - 1,
}


def _extreme(annotation: Any, metadata: list[Any], field_name: str) -> Any:
    """The largest valid value of a field: strings at max_length, numbers at their upper
    bound, collections full, optional values present."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _extreme(args[0], [*metadata, *args[1:]], field_name)
    if origin in (typing.Union, types.UnionType):
        return _extreme(next(a for a in args if a is not type(None)), metadata, field_name)
    if origin is typing.Literal:
        return args[0]
    flat: list[Any] = []
    for m in metadata:  # Field(...) inside Annotated carries its constraints as metadata
        flat.extend(m.metadata if isinstance(m, FieldInfo) else [m])
    limits = {
        attr: getattr(m, attr)
        for m in flat
        for attr in ("le", "lt", "ge", "max_length")
        if getattr(m, attr, None) is not None
    }
    if origin is list:
        return [_extreme(args[0], [], field_name) for _ in range(limits.get("max_length", 1))]
    if origin is dict:
        key = _extreme(args[0], [], field_name)
        return {f"{key[:-3]}{i:03d}": _extreme(args[1], [], field_name) for i in range(3)}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _maximal(annotation)
    if annotation is datetime:
        return datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    if annotation is bool:
        return True
    if annotation is int:
        return limits.get("le", 2**62)
    if annotation is float:
        return float(limits.get("le", 1e10))
    if annotation is str:
        n = limits.get("max_length", 4000)
        return "f" * n  # valid for every id, hex and name pattern in the schema
    raise AssertionError(f"{field_name}: no extreme for {annotation!r}")


def _maximal(model: type[BaseModel]) -> Any:
    values = {
        name: _extreme(field.annotation, list(field.metadata), name)
        for name, field in model.model_fields.items()
        if name not in ("audio_b64", "sha256")
    }
    return model.model_construct(**values)


def _check_row(table: Any, row: dict[str, Any]) -> list[str]:
    problems = []
    for column in table.columns:
        if column.name not in row or row[column.name] is None:
            continue
        value = row[column.name]
        kind = column.type
        if isinstance(kind, String) and kind.length is not None and len(value) > kind.length:
            problems.append(f"{table.name}.{column.name}: {len(value)} > {kind.length}")
        for int_type, top in _INT_RANGE.items():
            if type(kind) is int_type and not -top - 1 <= value <= top:
                problems.append(f"{table.name}.{column.name}: {value} out of {int_type.__name__}")
        if isinstance(kind, Float) and (value != value or abs(value) == float("inf")):
            problems.append(f"{table.name}.{column.name}: not finite")
        if isinstance(kind, JSON):
            json.dumps(value, allow_nan=False)
    return problems


def test_the_largest_valid_messages_fit_their_columns() -> None:
    now = datetime.now(UTC)
    built = [
        (Inference, rows.inference_row(_maximal(messages.InferenceMessage), now)),
        (Event, rows.event_row(_maximal(messages.EventMessage), now)),
        (Heartbeat, rows.heartbeat_row(_maximal(messages.HeartbeatMessage), now)),
    ]
    problems = [p for model, row in built for p in _check_row(table_of(model), row)]
    assert problems == []
    # The check can fail: a group name one character longer than the schema allows.
    too_long = dict(built[0][1], top_group="g" * (messages.ID_LEN + 1))
    assert _check_row(table_of(Inference), too_long)


def test_every_bounded_schema_number_is_bounded_by_a_column() -> None:
    """No sequenced message has an unbounded int field (2**63 once halted ingest)."""
    unbounded = []
    for model in (
        messages.InferenceMessage,
        messages.EventMessage,
        messages.ClipMessage,
        messages.HeartbeatMessage,
    ):
        for name, field in model.model_fields.items():
            base = field.annotation
            if typing.get_origin(base) in (typing.Union, types.UnionType):
                base = next(a for a in typing.get_args(base) if a is not type(None))
            if base is int and not any(
                getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None
                for m in field.metadata
            ):
                unbounded.append(f"{model.__name__}.{name}")
    assert unbounded == []
