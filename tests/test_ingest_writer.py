"""The batch writer against real databases (SQLite and MariaDB), without MQTT."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.models import (
    AckWatermark,
    Clip,
    DeadLetter,
    Device,
    Event,
    Heartbeat,
    Inference,
)
from earwitness.cloud.ingest.store import BatchStore
from earwitness.cloud.ingest.validate import Limits, RawMessage, prepare
from earwitness.shared.topics import Kind
from tests.factories import Device as Dev
from tests.factories import wire

NOW = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)


def raw(dev: Dev, kind: Kind, msg: object) -> RawMessage:
    return RawMessage(dev.topic(kind), wire(msg), NOW)


def write(engine, tmp_path: Path, batch: list[RawMessage]):  # type: ignore[no-untyped-def]
    store = FileClipStore(tmp_path / "clips")
    return BatchStore(engine).store(prepare(batch, store, Limits(512 * 1024, 4096)))


def count(engine, model) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_all_kinds_stored_with_watermark(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = Dev("site1", "dev1")
    batch = [
        raw(dev, Kind.INFERENCE, dev.inference(0)),
        raw(dev, Kind.EVENT, dev.event(1)),
        raw(dev, Kind.CLIP, dev.clip(2)),
        raw(dev, Kind.HEARTBEAT, dev.heartbeat(3)),
        raw(dev, Kind.STATUS, dev.status("online")),
    ]
    result = write(engine, tmp_path, batch)
    assert result.stored == 4 and result.duplicates == 0 and result.dead_letters == 0
    assert result.watermarks == {("site1", "dev1", "epoch0001"): 3}
    with engine.connect() as conn:
        inf = conn.execute(select(Inference)).one()
        assert inf.label == "Siren" and inf.top_group == "alarm"
        assert inf.window_start.tzinfo is not None
        assert inf.lat == 48.2082
        device = conn.execute(select(Device)).one()
        assert device.online is True and device.site == "site1"
        assert device.software_version == "0.1.0"
        clip = conn.execute(select(Clip)).one()
        assert clip.status == "pending" and clip.size_bytes > 100
    assert count(engine, Event) == 1 and count(engine, Heartbeat) == 1
    assert (tmp_path / "clips" / clip.storage_key).is_file()


def test_duplicates_make_one_row(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = Dev("site1", "dev1")
    first = raw(dev, Kind.INFERENCE, dev.inference(0))
    result = write(engine, tmp_path, [first, first])
    assert result.stored == 1 and result.duplicates == 1
    # Re-published after an outage: the same bytes again, in a later batch.
    result = write(engine, tmp_path, [first, raw(dev, Kind.INFERENCE, dev.inference(1))])
    assert result.stored == 1 and result.duplicates == 1
    assert count(engine, Inference) == 2
    assert result.watermarks[("site1", "dev1", "epoch0001")] == 1


def test_gaps_hold_the_watermark_until_filled(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = Dev("site1", "dev1")
    key = ("site1", "dev1", "epoch0001")
    r = write(engine, tmp_path, [raw(dev, Kind.INFERENCE, dev.inference(s)) for s in (0, 1, 3, 4)])
    assert r.watermarks[key] == 1
    r = write(engine, tmp_path, [raw(dev, Kind.INFERENCE, dev.inference(6))])
    assert r.watermarks[key] == 1
    r = write(engine, tmp_path, [raw(dev, Kind.INFERENCE, dev.inference(2))])
    assert r.watermarks[key] == 4  # 2 filled the gap: 3 and 4 were already stored
    r = write(engine, tmp_path, [raw(dev, Kind.INFERENCE, dev.inference(5))])
    assert r.watermarks[key] == 6
    with engine.connect() as conn:
        assert conn.execute(select(AckWatermark.seq)).scalar_one() == 6


def test_epochs_are_independent(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old, new = Dev("site1", "dev1", "epochAAAA"), Dev("site1", "dev1", "epochBBBB")
    r = write(
        engine,
        tmp_path,
        [raw(old, Kind.INFERENCE, old.inference(s)) for s in range(5)]
        + [raw(new, Kind.INFERENCE, new.inference(0))],
    )
    assert r.watermarks[("site1", "dev1", "epochAAAA")] == 4
    assert r.watermarks[("site1", "dev1", "epochBBBB")] == 0


def test_heartbeat_floor_skips_dropped_seqs(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = Dev("site1", "dev1")
    # The device dropped seqs 0..9 (outbox full); its heartbeat says the oldest kept is 10.
    r = write(
        engine,
        tmp_path,
        [raw(dev, Kind.INFERENCE, dev.inference(s)) for s in (10, 11)]
        + [raw(dev, Kind.HEARTBEAT, dev.heartbeat(12, outbox_min_seq=10))],
    )
    assert r.watermarks[("site1", "dev1", "epoch0001")] == 12


def test_each_device_keeps_its_own_latest_heartbeat(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # One UPDATE sets the latest heartbeat of every device in a batch: each row must get
    # its own device's newest one, and a device without a heartbeat keeps what it had.
    devs = [Dev("site1", f"dev{i}") for i in range(5)]
    write(engine, tmp_path, [raw(devs[4], Kind.HEARTBEAT, devs[4].heartbeat(0))])
    batch = [
        raw(d, Kind.HEARTBEAT, d.heartbeat(10 * i + s))
        for i, d in enumerate(devs[:4])
        for s in (1, 2)
    ]
    write(engine, tmp_path, batch)
    with engine.connect() as conn:
        beats = dict(conn.execute(select(Device.id, Device.last_heartbeat)).all())
    assert {d: hb["windows_processed"] for d, hb in beats.items()} == {
        "dev0": 2,
        "dev1": 12,
        "dev2": 22,
        "dev3": 32,
        "dev4": 0,
    }


def test_malformed_messages_go_to_dead_letters(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = Dev("site1", "dev1")
    good = dev.inference(0)
    bad_value = wire(good).replace(b'"score":0.8', b'"score":7.5')
    batch = [
        RawMessage(dev.topic(Kind.INFERENCE), b"{not json", NOW),
        RawMessage(dev.topic(Kind.INFERENCE), bad_value, NOW),
        RawMessage("earwitness/v9/x/y/inference", wire(good), NOW),
        RawMessage("other/topic", b"{}", NOW),
        RawMessage(dev.topic(Kind.EVENT), wire(good), NOW),  # kind mismatch
        RawMessage(dev.topic(Kind.INFERENCE), b"x" * 2_000_000, NOW),
        RawMessage(Dev("site1", "other").topic(Kind.INFERENCE), wire(dev.inference(5)), NOW),
        raw(dev, Kind.INFERENCE, dev.inference(1)),
    ]
    r = write(engine, tmp_path, batch)
    assert r.dead_letters == 7 and r.stored == 1
    with engine.connect() as conn:
        errors = [row.error for row in conn.execute(select(DeadLetter).order_by(DeadLetter.id))]
        sizes = [
            row.payload_size for row in conn.execute(select(DeadLetter).order_by(DeadLetter.id))
        ]
        kept = [len(row.payload) for row in conn.execute(select(DeadLetter))]
    assert errors[0].startswith("bad JSON")
    assert "top.0.score" in errors[1]
    assert "unsupported topic version" in errors[2]
    assert errors[3].startswith("unknown topic")
    assert "does not match topic kind" in errors[4]
    assert errors[5].startswith("oversized")
    assert "published on site1/other" in errors[6]
    assert sizes[5] == 2_000_000 and max(kept) <= 4096
    # The dead-lettered seq 0 (valid JSON with epoch/seq) counts as stored, so one bad
    # message cannot hold the device's acknowledgements back forever.
    assert r.watermarks[("site1", "dev1", "epoch0001")] == 1
    # A payload on another device's topic counts for the topic's device (the ACL's word).
    assert ("site1", "other", "epoch0001") in r.watermarks


def test_corrupt_and_oversized_clips_are_dead_letters(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = Dev("site1", "dev1")
    r = write(
        engine,
        tmp_path,
        [
            raw(dev, Kind.CLIP, dev.clip(0, flac=b"fLaC" + b"\x00" * 200)),
            raw(dev, Kind.CLIP, dev.clip(1)),
        ],
    )
    assert r.dead_letters == 1 and r.stored == 1
    with engine.connect() as conn:
        assert (
            "clip does not decode as audio" in conn.execute(select(DeadLetter.error)).scalar_one()
        )


def test_stale_status_does_not_override_newer(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = Dev("site1", "dev1")
    later = NOW + timedelta(minutes=5)
    write(engine, tmp_path, [raw(dev, Kind.STATUS, dev.status("offline", later))])
    write(engine, tmp_path, [raw(dev, Kind.STATUS, dev.status("online", NOW))])
    with engine.connect() as conn:
        assert conn.execute(select(Device.online)).scalar_one() is False
    write(engine, tmp_path, [raw(dev, Kind.STATUS, dev.status("online", later + timedelta(1)))])
    with engine.connect() as conn:
        assert conn.execute(select(Device.online)).scalar_one() is True


def test_empty_retained_status_is_not_a_dead_letter(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = Dev("site1", "dev1")
    r = write(engine, tmp_path, [RawMessage(dev.topic(Kind.STATUS), b"", NOW)])
    assert r.dead_letters == 0 and r.kinds == {"retained_cleared": 1}


def test_watermark_matches_a_naive_count_over_random_batches(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Random arrival orders, duplicates and batch splits: the watermark (kept as runs in
    pending_seqs) always equals the longest stored prefix 0..n, counted naively."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from earwitness.cloud.db.models import PendingSeq

    runs = iter(range(10_000))

    @settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=25), min_size=1, max_size=6))
    def check(batches: list[list[int]]) -> None:
        dev = Dev("site1", f"prop{next(runs)}")
        key = ("site1", dev.device, "epoch0001")
        stored: set[int] = set()
        for batch in batches:
            r = write(engine, tmp_path, [raw(dev, Kind.INFERENCE, dev.inference(s)) for s in batch])
            stored |= set(batch)
            prefix = -1
            while prefix + 1 in stored:
                prefix += 1
            assert r.watermarks[key] == prefix, (batches, stored)
        with engine.connect() as conn:
            left = conn.execute(
                select(PendingSeq.seq, PendingSeq.seq_end).where(PendingSeq.device_id == dev.device)
            ).all()
        assert all(start > prefix + 1 for start, _end in left)  # passed runs are deleted
        assert {s for a, b in left for s in range(a, b + 1)} == {s for s in stored if s > prefix}

    check()


def test_known_devices_are_rewritten_only_when_something_changed(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A fleet must not cost one device-row update per message: last_seen is written
    again after SEEN_EVERY_S (30 s), a new location at once."""
    from earwitness.cloud.ingest.store import SEEN_EVERY_S

    t0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)  # messages received as sent
    name = f"seen{uuid.uuid4().hex[:8]}"  # the database may hold other tests' devices
    dev = Dev("site1", name, t0=t0)
    moved = Dev("site1", name, t0=t0, location=(47.0, 15.0))
    batches = BatchStore(engine)
    clips = FileClipStore(tmp_path / "clips")

    def store(d: Dev, seq: int) -> None:  # received as the device sent it
        msg = d.inference(seq)
        message = RawMessage(d.topic(Kind.INFERENCE), wire(msg), msg.ts)
        batches.store(prepare([message], clips, Limits(2**19, 4096)))

    def seen() -> tuple[datetime, float | None]:
        with engine.connect() as conn:
            query = select(Device.last_seen, Device.lat).where(Device.id == name)
            row = conn.execute(query).one()
        return row.last_seen, row.lat

    store(dev, 0)
    first, lat = seen()
    assert lat == 48.2082
    store(dev, 10)  # 4.8 s later: nothing new to say
    assert seen() == (first, 48.2082)
    late = int(SEEN_EVERY_S / 0.48) + 2
    store(dev, late)
    assert seen()[0] == first + timedelta(seconds=0.48 * late)
    store(moved, late + 1)  # 0.48 s later, somewhere else: written at once
    assert seen() == (first + timedelta(seconds=0.48 * (late + 1)), 47.0)


def test_concurrent_writers_settle_every_watermark(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two writers (as two store processes, or two consumers on a shared subscription)
    get the same devices' messages in random splits and orders, at once. Each takes the
    marks' locks last in its transaction: every mark must end at the highest seq, with
    no pending run left behind and every message stored once."""
    import random
    import threading

    from earwitness.cloud.db.models import PendingSeq

    rng = random.Random(7)
    devs = [Dev("site1", f"race{uuid.uuid4().hex[:6]}{i}") for i in range(12)]

    def message(d: Dev, seq: int) -> RawMessage:  # what a fleet sends: mostly inferences
        if seq % 7 == 3:
            return raw(d, Kind.HEARTBEAT, d.heartbeat(seq))
        return raw(d, Kind.INFERENCE, d.inference(seq))

    messages = [message(d, s) for d in devs for s in range(60)]
    messages += [
        raw(d, Kind.STATUS, d.status("online", NOW + timedelta(seconds=i)))
        for i, d in enumerate(devs * 3)
    ]
    rng.shuffle(messages)
    halves = [messages[0::2], messages[1::2]]
    clips = FileClipStore(tmp_path / "clips")
    errors: list[BaseException] = []
    retries: list[int] = []

    def writer(mine: list[RawMessage]) -> None:
        batches = BatchStore(engine)
        try:
            for i in range(0, len(mine), 45):
                batches.store(prepare(mine[i : i + 45], clips, Limits(512 * 1024, 4096)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        retries.append(batches.retries)

    threads = [threading.Thread(target=writer, args=(half,)) for half in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    ids = [d.device for d in devs]
    with engine.connect() as conn:
        marks = dict(
            conn.execute(
                select(AckWatermark.device_id, AckWatermark.seq).where(
                    AckWatermark.device_id.in_(ids)
                )
            ).all()
        )
        left = conn.execute(
            select(func.count()).select_from(PendingSeq).where(PendingSeq.device_id.in_(ids))
        ).scalar_one()
        stored = conn.execute(
            select(func.count()).select_from(Inference).where(Inference.device_id.in_(ids))
        ).scalar_one()
        stored += conn.execute(
            select(func.count()).select_from(Heartbeat).where(Heartbeat.device_id.in_(ids))
        ).scalar_one()
    assert marks == {d: 59 for d in ids}
    assert left == 0
    assert stored == len(devs) * 60
    # Both write device rows, watermarks and data in one transaction each, in one lock
    # order: no deadlock to retry (each retry redoes a whole batch).
    assert retries == [0, 0]
