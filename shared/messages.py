"""Versioned message schemas shared by the edge agent and the cloud (see docs/protocol.md).

Every device -> cloud message except ``status`` travels through the device's durable outbox
and carries the outbox ``epoch`` and a per-device ``seq``: the cloud acknowledges the
highest contiguous ``seq`` it has committed, per epoch, and the device deletes what is
acknowledged. ``id`` is the idempotency key the database deduplicates on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from earwitness.shared.topics import ID_PATTERN, Kind, Topic, TopicError, parse

SCHEMA_VERSION: Literal[1] = 1

MAX_PAYLOAD_BYTES = 1_048_576
"""Largest message accepted from the network (a clip with base64 audio fits with margin)."""
MAX_CLIP_AUDIO_BYTES = 512 * 1024
"""Largest FLAC clip: ~10 s of 16 kHz 16-bit audio compresses well below this."""
MAX_TOP_K = 10
MAX_GROUPS = 32
MAX_SEQ = 2**62
"""Seqs and counters stop here: a BIGINT column holds them, and seq + 1 never overflows."""
MAX_COUNT = 2**62
MAX_INT32 = 2**31 - 1  # INTEGER columns
ID_LEN = 64  # ids, group names: the String(64) columns they land in
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # a device without a clock boots in 1970
LATEST = datetime(2200, 1, 1, tzinfo=UTC)  # far past any real clock; MySQL DATETIME ends 9999

DeviceId = Annotated[str, Field(max_length=ID_LEN, pattern=f"^{ID_PATTERN}$")]
MessageId = Annotated[str, Field(min_length=8, max_length=ID_LEN, pattern=r"^[A-Za-z0-9_.:-]+$")]
GroupName = Annotated[
    str, Field(min_length=1, max_length=ID_LEN, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
]
HeadId = Annotated[str, Field(max_length=80, pattern=r"^[A-Za-z0-9_.-]+@[0-9a-f]{12}$")]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


def _utc_in_range(value: datetime) -> datetime:
    """Every timestamp carries an offset and lies in a range the database can store."""
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset")
    value = value.astimezone(UTC)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"timestamp outside {EARLIEST.year}..{LATEST.year}")
    return value


Timestamp = Annotated[datetime, AfterValidator(_utc_in_range)]
EventPhase = Literal["start", "update", "end"]
ClipReason = Literal["sampled", "event", "low_confidence"]
DeviceState = Literal["online", "offline"]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Latitude = Annotated[float, Field(ge=-90.0, le=90.0)]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0)]
Name = Annotated[str, Field(min_length=1, max_length=128)]


_ID_NAMESPACE = uuid.NAMESPACE_URL.bytes


def message_id(device: str, epoch: str, seq: int) -> str:
    """Deterministic id, so a message re-sent from the outbox keeps its idempotency key:
    ``uuid5(NAMESPACE_URL, "earwitness:<device>/<epoch>/<seq>").hex``, written out (the
    uuid module's objects cost twice the hash; devices and fleets make one per window)."""
    digest = bytearray(
        hashlib.sha1(_ID_NAMESPACE + f"earwitness:{device}/{epoch}/{seq}".encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


class _Frozen(BaseModel):
    # strict: numbers are numbers, ints are not bools, timestamps are strings (RFC 3339),
    # never epoch numbers; no NaN or Infinity, which no database column can hold.
    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=False, strict=True, allow_inf_nan=False
    )


class LabelScore(_Frozen):
    index: int = Field(ge=0, le=10_000, description="class index in the model's class map")
    mid: str = Field(max_length=32, description="AudioSet machine id, e.g. /m/03kmc9")
    name: Name
    score: Score


class Location(_Frozen):
    lat: Latitude
    lon: Longitude


class _Envelope(_Frozen):
    v: Literal[1] = Field(SCHEMA_VERSION, description="schema version")
    id: MessageId = Field(description="unique message id; the idempotency key")
    site: DeviceId
    device: DeviceId
    ts: Timestamp = Field(description="when the device created the message (UTC)")

    @field_validator("v", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if type(value) is not int or value != SCHEMA_VERSION:  # not True, not 1.0
            raise ValueError(f"schema version must be the integer {SCHEMA_VERSION}")
        return value


class _Sequenced(_Envelope):
    epoch: str = Field(
        min_length=8,
        max_length=32,
        pattern=r"^[A-Za-z0-9]+$",
        description="id of the device's outbox instance; seq restarts only with a new epoch",
    )
    seq: Seq = Field(description="per-device, per-epoch sequence number")


class InferenceMessage(_Sequenced):
    kind: Literal["inference"] = "inference"
    window_start: Timestamp = Field(description="UTC start of the 0.96 s analysis window")
    window_s: float = Field(gt=0, le=60)
    top: list[LabelScore] = Field(min_length=1, max_length=MAX_TOP_K)
    groups: dict[GroupName, Score] = Field(default_factory=dict, max_length=MAX_GROUPS)
    custom: dict[GroupName, Score] | None = Field(
        None, max_length=256, description="scores of a custom head trained on embeddings"
    )
    detected: list[GroupName] | None = Field(
        None,
        max_length=32,
        description="custom classes at or above their head's calibrated threshold, best first",
    )
    dbfs: float = Field(ge=-200, le=10, description="window level, dB relative to full scale")
    leq_dbfs: float | None = Field(None, ge=-200, le=10, description="running Leq")
    inference_ms: float = Field(ge=0, le=60_000)
    model: str = Field(max_length=80, description="model name@sha256 prefix")
    location: Location | None = None

    @field_validator("top")
    @classmethod
    def _sorted(cls, value: list[LabelScore]) -> list[LabelScore]:
        if any(a.score < b.score for a, b in itertools.pairwise(value)):
            raise ValueError("top labels must be sorted by descending score")
        return value


class EventMessage(_Sequenced):
    kind: Literal["event"] = "event"
    event_id: MessageId
    phase: EventPhase
    label: Name = Field(description="the label or group that triggered the event")
    group: GroupName | None = None
    started_at: Timestamp
    duration_s: float = Field(ge=0, le=86_400)
    peak_score: Score
    windows: int = Field(ge=1, le=MAX_INT32)
    peak_dbfs: float = Field(ge=-200, le=10)
    location: Location | None = None


class ClipMessage(_Sequenced):
    kind: Literal["clip"] = "clip"
    clip_id: MessageId
    reason: ClipReason
    event_id: MessageId | None = None
    started_at: Timestamp = Field(description="UTC time of the clip's first sample")
    duration_s: float = Field(gt=0, le=30)
    sample_rate: int = Field(ge=8000, le=48000)
    format: Literal["flac"] = "flac"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    audio_b64: str = Field(max_length=(MAX_CLIP_AUDIO_BYTES * 4) // 3 + 4)
    window_start: Timestamp = Field(description="the analysis window this clip was taken for")
    edge_top: list[LabelScore] = Field(min_length=1, max_length=MAX_TOP_K)
    edge_groups: dict[GroupName, Score] = Field(default_factory=dict, max_length=MAX_GROUPS)
    model: str = Field(max_length=80)

    def audio(self) -> bytes:
        return base64.b64decode(self.audio_b64, validate=True)

    @model_validator(mode="after")
    def _audio_matches_hash(self) -> ClipMessage:
        try:
            blob = base64.b64decode(self.audio_b64, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"audio_b64 is not valid base64: {exc}") from exc
        if not blob:
            raise ValueError("audio_b64 is empty")
        if len(blob) > MAX_CLIP_AUDIO_BYTES:
            raise ValueError(f"clip audio is {len(blob)} bytes, limit {MAX_CLIP_AUDIO_BYTES}")
        if hashlib.sha256(blob).hexdigest() != self.sha256:
            raise ValueError("sha256 does not match the clip audio")
        return self


class HeartbeatMessage(_Sequenced):
    kind: Literal["heartbeat"] = "heartbeat"
    uptime_s: float = Field(ge=0, le=1e10)
    version: str = Field(max_length=40)
    model: str = Field(max_length=80)
    queue_depth: Count = Field(description="audio windows waiting for inference")
    windows_processed: Count
    windows_dropped: Count = Field(description="windows dropped because inference lagged")
    outbox_rows: Count
    outbox_bytes: Count
    outbox_dropped: Count = Field(description="messages dropped because the outbox was full")
    outbox_min_seq: Seq = Field(
        description="lowest seq still held; every lower seq was delivered or dropped"
    )
    clips_sent: Count
    clips_blocked_privacy: Count = Field(description="clips withheld because of speech")
    clips_too_large: Count = Field(
        0, description="clips withheld because they encoded above clips.max_bytes"
    )
    acks_rejected: Count = Field(
        0, description="acks ignored: above what was sent, or for rows never sent (forged)"
    )
    leq_dbfs: float | None = Field(None, ge=-200, le=10)
    cpu_temp_c: float | None = Field(None, ge=-60, le=150)
    location: Location | None = None
    heads: list[HeadId] | None = Field(None, max_length=8, description="custom heads running")


class StatusMessage(_Envelope):
    """Retained; the broker publishes ``offline`` as the device's last will."""

    kind: Literal["status"] = "status"
    state: DeviceState
    name: str | None = Field(None, max_length=128, description="the device's name from its config")
    version: str | None = Field(None, max_length=40)
    model: str | None = Field(None, max_length=80)
    location: Location | None = None
    config_error: str | None = Field(None, max_length=2000)
    config_version: int | None = Field(None, ge=0, le=MAX_SEQ)
    heads: list[HeadId] | None = Field(None, max_length=8, description="custom heads running")
    acks_rejected: Count | None = Field(
        None, description="acks the device ignored as forged (see HeartbeatMessage)"
    )


class AckMessage(_Frozen):
    """Cloud -> device: every seq <= ``seq`` of ``epoch`` is committed to the database."""

    v: Literal[1] = SCHEMA_VERSION
    epoch: str = Field(min_length=8, max_length=32)
    seq: int = Field(ge=-1, le=MAX_SEQ)
    ts: Timestamp


def encode_acks(acks: Iterable[tuple[str, int]], ts: datetime) -> list[bytes]:
    """The JSON of an AckMessage for each (epoch, seq), all with one timestamp: the bytes
    ``AckMessage(...).model_dump_json()`` gives, written directly where the values are
    plainly valid (an ingest publishes one ack per device per commit, 5,000 a second for a
    fleet: the model cost 5 µs each). Anything else goes through the model, which refuses
    what is invalid."""
    stamp = AckMessage(epoch="00000000", seq=0, ts=ts).model_dump(mode="json")["ts"]
    out = []
    for epoch, seq in acks:
        if (
            8 <= len(epoch) <= 32
            and epoch.isascii()
            and epoch.isalnum()
            and type(seq) is int
            and -1 <= seq <= MAX_SEQ
        ):
            out.append(f'{{"v":1,"epoch":"{epoch}","seq":{seq},"ts":"{stamp}"}}'.encode())
        else:
            out.append(AckMessage(epoch=epoch, seq=seq, ts=ts).model_dump_json().encode())
    return out


UplinkMessage = Annotated[
    InferenceMessage | EventMessage | ClipMessage | HeartbeatMessage | StatusMessage,
    Field(discriminator="kind"),
]
_uplink: TypeAdapter[UplinkMessage] = TypeAdapter(UplinkMessage)


class MessageError(ValueError):
    """Why a payload was rejected; stored with it in the dead-letter table."""


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


def decode(topic_name: str, payload: bytes) -> UplinkMessage:
    """Validate one MQTT message end to end: size, topic, JSON, schema, topic/payload match."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError(f"oversized: {len(payload)} bytes > limit {MAX_PAYLOAD_BYTES}")
    try:
        t: Topic = parse(topic_name)
    except TopicError as exc:
        raise MessageError(f"unknown topic: {exc}") from exc
    if t.kind not in Kind.__members__.values():
        raise MessageError(f"unknown message kind {t.kind!r} in topic")
    _check_json(payload)
    try:
        msg = _uplink.validate_json(payload)
    except ValidationError as exc:
        raise MessageError(f"schema: {_short(exc)}") from exc
    if msg.kind != t.kind:
        raise MessageError(f"kind {msg.kind!r} does not match topic kind {t.kind!r}")
    if msg.device != t.device or msg.site != t.site:
        raise MessageError(
            f"payload names {msg.site}/{msg.device} but was published on {t.site}/{t.device}"
        )
    return msg


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise MessageError(f"bad JSON: duplicate key {dup[:64]!r}")
    return obj


_STRICT_JSON = json.JSONDecoder(object_pairs_hook=_unique_keys)
"""Built once: ``json.loads`` with a hook builds a decoder and its scanner per call, which
at a fleet's 5,000 messages per second cost a store process a quarter of the parse."""


def _check_json(payload: bytes) -> None:
    """What pydantic's JSON parser lets through: duplicate keys (the last would win, so a
    validator and a later reader could see different values) and a missing, boolean or
    float version. Raises MessageError saying what is wrong."""
    try:
        # UTF-8 only, as pydantic reads it (json.loads would also guess UTF-16 and -32).
        raw: Any = _STRICT_JSON.decode(payload.decode("utf-8"))
    except MessageError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MessageError(f"bad JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MessageError(f"bad JSON: expected an object, got {type(raw).__name__}")
    version = raw.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise MessageError(f"unknown schema version {version!r} (expected {SCHEMA_VERSION})")


def encode(msg: BaseModel) -> bytes:
    return msg.model_dump_json(exclude_none=True).encode()
