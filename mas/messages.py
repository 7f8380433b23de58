"""Messages, task results and addresses: the values that travel between agents.

A `Message` is a plain slotted object rather than a pydantic model: it is created and handled
on the per-message fast path, so construction costs a uuid, a timestamp and a few isinstance
checks. Full validation happens where untrusted data enters, in `Message.from_dict` /
`Message.from_json`. Only JSON crosses a wire; nothing here pickles.
"""

from __future__ import annotations

import copy as _copy
import hashlib
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from mas.errors import InvalidAddress, InvalidMessage, MessageTooLarge

__all__ = [
    "MAX_DEPTH",
    "Address",
    "Message",
    "TaskError",
    "TaskResult",
    "body_id",
    "check_depth",
    "derived_id",
    "parse_address",
    "topic_matches",
]

JSONObject = dict[str, Any]
AddressKind = Literal["agent", "type", "capability", "topic", "reply"]

_MAX_ADDRESS_VALUE = 200
_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@\-]*")
_TYPE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_WORD_RE = re.compile(r"[A-Za-z0-9_\-]+")

MAX_DEPTH = 64
"""How deeply a message's payload or metadata may nest (objects and arrays). Deeper JSON is
refused where it enters: serializing it fails past a depth (pydantic stops at 255), and one
stored task that cannot be written out would break every read that lists it."""

# Built once: `json.dumps` with options builds a new encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_KINDS: tuple[AddressKind, ...] = ("agent", "type", "capability", "topic", "reply")


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed address: `agent:<id>`, `type:<agent_type>`, `capability:<name>` (any agent
    type that offers it, resolved when sent), `topic:<routing.key>`.

    `reply:<node>` is internal: it names the node that waits for the answers to its `ask`s.
    """

    kind: AddressKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    @property
    def is_pattern(self) -> bool:
        """True for a topic pattern that uses `*` or `#` (valid to subscribe, not to publish)."""
        return self.kind == "topic" and any(w in ("*", "#") for w in self.value.split("."))


def parse_address(text: str, *, allow_patterns: bool = False) -> Address:
    """Parse an address string, raising `InvalidAddress` with what to write instead.

    Topic patterns (`orders.*`, `audit.#`) are accepted only with `allow_patterns=True`:
    a message is published to one concrete key, a subscription may use wildcards.
    """
    if not isinstance(text, str):
        raise InvalidAddress(f"an address is a string like 'agent:<id>', got {type(text).__name__}")
    kind, sep, value = text.partition(":")
    if not sep or kind not in _KINDS:
        raise InvalidAddress(
            f"{text!r} is not an address: write 'agent:<id>', 'type:<agent_type>', "
            "'capability:<name>' or 'topic:<routing.key>'"
        )
    if not value or len(value) > _MAX_ADDRESS_VALUE:
        raise InvalidAddress(
            f"{text!r}: the part after '{kind}:' must be 1 to {_MAX_ADDRESS_VALUE} characters"
        )
    if kind in ("agent", "reply"):
        if not _ID_RE.fullmatch(value):
            raise InvalidAddress(
                f"{text!r}: an id uses letters, digits and _ . : @ - and starts with a "
                "letter, digit or _"
            )
    elif kind in ("type", "capability"):
        if not _TYPE_RE.fullmatch(value):
            raise InvalidAddress(
                f"{text!r}: {'an agent type' if kind == 'type' else 'a capability'} uses "
                "letters, digits and _ . - and starts with a letter or _"
            )
    else:
        _check_topic(text, value, allow_patterns)
    return Address(kind, value)


def _check_topic(text: str, key: str, allow_patterns: bool) -> None:
    for word in key.split("."):
        if word in ("*", "#"):
            if not allow_patterns:
                raise InvalidAddress(
                    f"{text!r}: wildcards '*' and '#' are for subscriptions; "
                    "publish to a concrete key such as 'orders.created'"
                )
        elif not _WORD_RE.fullmatch(word):
            raise InvalidAddress(
                f"{text!r}: a topic is dot-separated words of letters, digits, _ and - "
                "(and '*' or '#' as whole words in a subscription)"
            )


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` is zero or more words."""
    return _match_words(pattern.split("."), 0, key.split("."), 0)


def _match_words(pat: list[str], i: int, words: list[str], j: int) -> bool:
    while i < len(pat):
        p = pat[i]
        if p == "#":
            # '#' can swallow any number of words: try each split point.
            return any(_match_words(pat, i + 1, words, k) for k in range(j, len(words) + 1))
        if j >= len(words) or (p != "*" and p != words[j]):
            return False
        i += 1
        j += 1
    return j == len(words)


_IDS_PER_BATCH = 256
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _id_batch() -> Iterator[str]:
    """The next `_IDS_PER_BATCH` ids of this thread, formatted in one pass."""
    h = os.urandom(16 * _IDS_PER_BATCH).hex()
    variant = _VARIANT
    return iter(
        [
            f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-"
            f"{variant[h[i + 16]]}{h[i + 17 : i + 20]}-{h[i + 20 : i + 32]}"
            for i in range(0, 32 * _IDS_PER_BATCH, 32)
        ]
    )


# One pool of ready ids per thread: a pool shared between threads hands the same bytes to two
# threads that read its position before either advances it (an embedded runtime is called
# from web frameworks' and executors' threads), and an id is an idempotency key.
_ids = threading.local()


def _reset_ids() -> None:
    global _ids
    _ids = threading.local()


os.register_at_fork(after_in_child=_reset_ids)  # a forked child must not reuse our ids


def new_id() -> str:
    """A random (version 4) UUID string, like `str(uuid.uuid4())` at a third of the cost.

    Every message needs an id, so this is on the fast path: random bytes are read from the
    OS for a few hundred ids at a time, per thread, so that no two threads share a pool.
    """
    try:
        return next(_ids.pool)  # type: ignore[no-any-return]  # a thread-local attribute
    except (AttributeError, StopIteration):
        _ids.pool = pool = _id_batch()
        return next(pool)


# Version 8 (RFC 9562: custom) and the RFC variant, set over the first 128 bits of a hash.
_V8_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V8_SET = (0x8000 << 64) | (0x8000 << 48)


def body_id(body: bytes) -> str:
    """A UUID derived from a message body's bytes: its SHA-256, cut to 128 bits (version 8).

    For a message published without an id: decoding the same bytes again (a redelivery, a
    second publish) gives the same id, so deduplication recognises it. It follows that two
    id-less bodies with identical bytes are one message, handled once.
    """
    n = int.from_bytes(hashlib.sha256(body).digest()[:16], "big")
    return str(uuid.UUID(int=(n & _V8_CLEAR) | _V8_SET))


def derived_id(parent: str, seq: int) -> str:
    """The id of the `seq`-th message a handler sends while handling `parent` (a message id,
    qualified by whose handling it is when several agents handle that id).

    Deterministic, so a re-run of the handler (a retry, a redelivery, a failover) sends the
    same ids again and the receivers' deduplication drops the copies of what arrived before.
    """
    return body_id(f"{parent}#{seq}".encode())


_new_object = object.__new__


class Message:
    """One message between agents; `id` is its idempotency key.

    The runtime fills `sender`, `target` and `trace_id` when they are unset: the first send
    addresses the message itself (`target`, and `reply_to` for an ask), which costs nothing
    on the hot path. Once sent, a message is a value: the runtime never changes it again (a
    later send to another address, or an ask of a message already sent, goes as a copy),
    and neither should its sender or its handler: build a new one (`reply`, `evolve`).
    """

    __slots__ = (
        "correlation_id",
        "created_at",
        "id",
        "metadata",
        "payload",
        "reply_to",
        "sender",
        "target",
        "trace_id",
        "type",
    )

    def __init__(
        self,
        type: str,
        payload: JSONObject | None = None,
        *,
        id: str | None = None,
        sender: str | None = None,
        target: str | None = None,
        created_at: datetime | None = None,
        metadata: JSONObject | None = None,
        trace_id: str | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        if not isinstance(type, str) or not type:
            raise InvalidMessage("a message needs a non-empty string 'type'")
        if payload is None:
            payload = {}
        elif not isinstance(payload, dict):
            raise InvalidMessage(
                f"message payload must be a JSON object (dict), got {payload.__class__.__name__}"
            )
        self.type = type
        self.payload = payload
        self.id = id if id is not None else new_id()
        self.sender = sender
        self.target = target
        self.created_at = created_at if created_at is not None else datetime.now(UTC)
        self.metadata = metadata if metadata is not None else {}
        self.trace_id = trace_id
        self.reply_to = reply_to
        self.correlation_id = correlation_id

    def __repr__(self) -> str:
        return (
            f"Message(type={self.type!r}, id={self.id!r}, sender={self.sender!r}, "
            f"target={self.target!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in Message.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable value

    @property
    def task_id(self) -> str | None:
        """The task this message belongs to (`metadata["task_id"]`), if any."""
        task_id = self.metadata.get("task_id")
        return task_id if isinstance(task_id, str) else None

    def reply(
        self,
        payload: JSONObject | None = None,
        *,
        type: str | None = None,
        metadata: JSONObject | None = None,
    ) -> Message:
        """Build the answer: addressed to the asker, correlated, on the same trace."""
        meta = dict(metadata) if metadata else {}
        if self.task_id is not None:
            meta.setdefault("task_id", self.task_id)
        return Message(
            type or f"{self.type}.reply",
            payload,
            sender=self.target,
            target=self.reply_to or self.sender,
            metadata=meta,
            trace_id=self.trace_id,
            correlation_id=self.id,
        )

    def evolve(self, **changes: Any) -> Message:
        """A copy with some fields replaced (the id is kept unless given)."""
        fields = {name: getattr(self, name) for name in Message.__slots__}
        fields.update(changes)
        message_type = fields.pop("type")
        payload = fields.pop("payload")
        return Message(message_type, payload, **fields)

    def copy(self) -> Message:
        """A shallow copy made without the constructor's checks (this message passed them).

        What the runtime sends when a message already sent must go elsewhere (see
        `addressed_to`); payload and metadata are shared, as with `evolve`, which validates
        and so costs several times as much.
        """
        new: Message = _new_object(Message)  # subclasses get _copy_subclass instead
        new.type = self.type
        new.payload = self.payload
        new.id = self.id
        new.sender = self.sender
        new.target = self.target
        new.created_at = self.created_at
        new.metadata = self.metadata
        new.trace_id = self.trace_id
        new.reply_to = self.reply_to
        new.correlation_id = self.correlation_id
        return new

    def addressed_to(self, target: str) -> Message:
        """This message, addressed to `target`, as a send hands it over.

        Unaddressed (never sent): itself, its `target` filled in. Already addressed to
        `target`: itself (a second copy of it is a duplicate, the same id). Addressed
        elsewhere, so sent before and perhaps still queued there: a copy, since a sent
        message is never changed. The copy keeps `sender`, `reply_to` and
        `correlation_id`: a forwarded message is answered to whoever asked it first.
        """
        current = self.target
        if current == target:
            return self
        message = self if current is None else self.copy()
        message.target = target
        return message

    def _copy_subclass(self) -> Message:
        """`copy` for subclasses: their own slots and attributes come along too."""
        return _copy.copy(self)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # `copy` is on the per-message fast path: Message's own stays free of a type check.
        super().__init_subclass__(**kwargs)
        if "copy" not in cls.__dict__:
            cls.copy = Message._copy_subclass  # type: ignore[method-assign]

    def to_dict(self) -> JSONObject:
        """The JSON-ready form (timestamps as ISO 8601 strings)."""
        return {
            "id": self.id,
            "type": self.type,
            "sender": self.sender,
            "target": self.target,
            "payload": self.payload,
            "created_at": self.created_at.isoformat(),
            "metadata": self.metadata,
            "trace_id": self.trace_id,
            "reply_to": self.reply_to,
            "correlation_id": self.correlation_id,
        }

    def to_json(self, *, max_bytes: int | None = None) -> bytes:
        """Serialize to UTF-8 JSON, refusing payloads that are not JSON or over `max_bytes`.

        Raises:
            InvalidMessage: the payload or metadata holds something JSON cannot carry.
            MessageTooLarge: the encoded message exceeds `max_bytes`.
        """
        try:
            data = _encode(self.to_dict()).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidMessage(
                f"message {self.id} of type {self.type!r} is not JSON-serializable: {exc}; "
                "payload and metadata may hold only dict, list, str, int, float, bool and None"
            ) from exc
        if max_bytes is not None and len(data) > max_bytes:
            raise MessageTooLarge(len(data), max_bytes)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Message:
        """Validate untrusted data into a Message, raising `InvalidMessage` naming the field."""
        if not isinstance(data, dict):
            raise InvalidMessage(f"a message is a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(cls.__slots__)
        if unknown:
            raise InvalidMessage(f"unknown message field(s): {', '.join(sorted(unknown))}")
        for name in ("id", "sender", "target", "trace_id", "reply_to", "correlation_id"):
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidMessage(f"message field {name!r} must be a string or null")
        for name in ("target", "reply_to", "sender"):
            value = data.get(name)
            if value is not None:
                try:
                    parse_address(value)
                except InvalidAddress as exc:
                    raise InvalidMessage(f"message field {name!r}: {exc}") from exc
        metadata = data.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidMessage("message field 'metadata' must be a JSON object")
        check_depth(data.get("payload"), "payload")
        check_depth(metadata, "metadata")
        return cls(
            data.get("type"),  # type: ignore[arg-type]  # checked in __init__
            data.get("payload"),
            id=data.get("id"),
            sender=data.get("sender"),
            target=data.get("target"),
            created_at=_parse_timestamp(data.get("created_at")),
            metadata=metadata,
            trace_id=data.get("trace_id"),
            reply_to=data.get("reply_to"),
            correlation_id=data.get("correlation_id"),
        )

    @classmethod
    def from_json(cls, raw: bytes | str, *, max_bytes: int | None = None) -> Message:
        """Decode and validate a message from JSON text.

        Raises:
            MessageTooLarge: `raw` exceeds `max_bytes`.
            InvalidMessage: not JSON, or not a valid message.
        """
        return cls.from_dict(_loads(raw, max_bytes))

    @classmethod
    def from_wire(
        cls,
        raw: bytes,
        *,
        max_bytes: int | None = None,
        message_id: str | None = None,
        served: str | None = None,
    ) -> Message:
        """Decode a body a broker delivered, which any client may have published.

        Other clients write the original design's JSON (`id`, `type`, `sender`, `target`,
        `payload`, `created_at`, `metadata`, `trace_id`; optional fields may be missing).
        It is read leniently exactly where it differs from mas's own format:

        - no `id`: the broker's `message_id` property if the publisher set one, else
          `body_id(raw)`; a random id would differ on every decode, and a redelivery would
          escape deduplication;
        - a bare agent id as `sender` (`planner-1`) is `agent:planner-1`;
        - a missing or bare `target` is `served`, the address of the queue the message was
          consumed from (`agent:<id>` for `agent.<id>`, `type:<t>` for `type.<t>`);
        - a `created_at` without a timezone (`datetime.utcnow()`) is UTC.

        Everything else is as strict as `from_dict`: a bad `type`, a payload that is not an
        object, an unknown field or an address of an unknown kind is invalid.

        The leniency lives here, not in `from_dict`, on purpose: mas's own senders (the
        gateway's requests, the test kit, the store's records) write mas's format, where a
        bare id is a mistake that must fail where it is made (DESIGN §3); and only a broker
        delivery knows the queue that stands in for a missing target, and the broker's
        message id.

        Raises:
            MessageTooLarge: `raw` exceeds `max_bytes`.
            InvalidMessage: not JSON, or not a valid message.
        """
        data = _loads(raw, max_bytes)
        if isinstance(data, dict):
            if data.get("id") is None:
                data["id"] = message_id or body_id(raw)
            sender = data.get("sender")
            if isinstance(sender, str) and _bare(sender):
                data["sender"] = f"agent:{sender}"
            target = data.get("target")
            if served is not None and (
                target is None or (isinstance(target, str) and _bare(target))
            ):
                data["target"] = served
            created_at = data.get("created_at")
            if isinstance(created_at, str):
                data["created_at"] = _utc_if_naive(created_at)
        return cls.from_dict(data)


def check_depth(value: Any, what: str, limit: int = MAX_DEPTH) -> Any:
    """`value` itself, when its objects and arrays nest at most `limit` deep.

    Raises:
        InvalidMessage: nested deeper (also a ValueError, so pydantic reports it as a 422).
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise InvalidMessage(
                f"{what} nests deeper than {limit} levels of objects and arrays: flatten it"
            )
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return value


def _bare(text: str) -> bool:
    """Not even shaped like an address (no `agent:`/`type:`/... prefix): a bare id."""
    kind, sep, _ = text.partition(":")
    return not sep or kind not in _KINDS


def _utc_if_naive(text: str) -> str | datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return text  # from_dict names the field
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else text


def _loads(raw: bytes | str, max_bytes: int | None) -> Any:
    if max_bytes is not None:
        size = len(raw.encode() if isinstance(raw, str) else raw)
        if size > max_bytes:
            raise MessageTooLarge(size, max_bytes)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidMessage(f"message is not valid JSON: {exc}") from exc


def _parse_timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidMessage(f"'created_at' is not an ISO 8601 timestamp: {value!r}") from exc
    else:
        raise InvalidMessage("'created_at' must be an ISO 8601 string")
    if parsed.tzinfo is None:
        raise InvalidMessage("'created_at' must carry a timezone (for example '+00:00')")
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TaskError:
    """Why a task failed: the exception type, its message, and whether a retry may help."""

    type: str
    message: str
    retryable: bool = False

    def to_dict(self) -> JSONObject:
        return {"type": self.type, "message": self.message, "retryable": self.retryable}


@dataclass(frozen=True, slots=True)
class TaskResult:
    """The outcome of a task; returned by a handler, it completes the task it names."""

    task_id: str
    status: Literal["succeeded", "failed"] = "succeeded"
    result: Any = None
    error: TaskError | None = None
    metadata: JSONObject = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in ("succeeded", "failed"):
            raise InvalidMessage(
                f"TaskResult status must be 'succeeded' or 'failed', got {self.status!r}"
            )
        if self.status == "failed" and self.error is None:
            raise InvalidMessage("a failed TaskResult needs an error=TaskError(...)")

    @classmethod
    def succeeded(cls, task_id: str, result: Any = None) -> TaskResult:
        return cls(task_id, "succeeded", result)

    @classmethod
    def failed(cls, task_id: str, error: TaskError) -> TaskResult:
        return cls(task_id, "failed", None, error)

    def to_dict(self) -> JSONObject:
        return {
            "task_id": self.task_id,
            "status": self.status,
            "result": self.result,
            "error": self.error.to_dict() if self.error else None,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TaskResult:
        """Validate untrusted data into a TaskResult (raises `InvalidMessage`)."""
        if not isinstance(data, dict) or not isinstance(data.get("task_id"), str):
            raise InvalidMessage("a task result is an object with a string 'task_id'")
        error = data.get("error")
        task_error = None
        if error is not None:
            if not isinstance(error, dict) or not isinstance(error.get("type"), str):
                raise InvalidMessage("task result 'error' needs 'type' and 'message' strings")
            task_error = TaskError(
                error["type"], str(error.get("message", "")), bool(error.get("retryable"))
            )
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InvalidMessage("task result 'metadata' must be an object")
        return cls(
            data["task_id"],
            data.get("status", "succeeded"),
            data.get("result"),
            task_error,
            metadata,
        )
