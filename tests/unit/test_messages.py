"""Messages, task results and addresses: construction, validation and the JSON wire form."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mas.errors import InvalidAddress, InvalidMessage, MessageTooLarge
from mas.messages import (
    Address,
    Message,
    TaskError,
    TaskResult,
    body_id,
    new_id,
    parse_address,
    topic_matches,
)

# --------------------------------------------------------------------------- Message defaults


def test_message_defaults_to_uuid_id_utc_timestamp_and_empty_payload_and_metadata():
    before = datetime.now(UTC)
    message = Message("greet")
    after = datetime.now(UTC)

    assert str(uuid.UUID(message.id)) == message.id
    assert message.created_at.tzinfo is not None
    assert message.created_at.utcoffset() == timedelta(0)
    assert before <= message.created_at <= after
    assert message.payload == {}
    assert message.metadata == {}
    assert message.sender is None
    assert message.target is None
    assert message.trace_id is None
    assert message.reply_to is None
    assert message.correlation_id is None


def test_each_message_gets_its_own_id_and_containers():
    first, second = Message("a"), Message("a")

    assert first.id != second.id
    first.payload["x"] = 1
    first.metadata["y"] = 2
    assert second.payload == {}
    assert second.metadata == {}


def test_ids_drawn_from_many_threads_at_once_are_all_distinct():
    # An id is an idempotency key: two messages sharing one would be handled once. Threads
    # switched as often as possible interleave inside `new_id` if anything there is shared.
    threads_n, per_thread = 4, 50_000
    start = threading.Barrier(threads_n)
    drawn: list[list[str]] = [[] for _ in range(threads_n)]

    def draw(into: list[str]) -> None:
        start.wait()
        into.extend(new_id() for _ in range(per_thread))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=draw, args=(ids,)) for ids in drawn]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)

    every = [each for ids in drawn for each in ids]
    assert len(every) == threads_n * per_thread
    assert len(set(every)) == len(every)
    assert all(uuid.UUID(each).version == 4 for each in every[:: per_thread // 10])


@pytest.mark.parametrize("bad_type", ["", None, 3, b"greet"])
def test_message_type_must_be_a_non_empty_string(bad_type):
    with pytest.raises(InvalidMessage, match="type"):
        Message(bad_type)


@pytest.mark.parametrize("bad_payload", [[1, 2], "text", 3, (("a", 1),)])
def test_message_payload_must_be_a_dict(bad_payload):
    with pytest.raises(InvalidMessage, match="payload"):
        Message("greet", bad_payload)


def test_task_id_property_reads_metadata_and_ignores_non_strings():
    assert Message("t", metadata={"task_id": "task-1"}).task_id == "task-1"
    assert Message("t").task_id is None
    assert Message("t", metadata={"task_id": 42}).task_id is None


# --------------------------------------------------------------------------- JSON round trip


def _full_message(**overrides):
    fields = {
        "id": "m-1",
        "sender": "agent:alice",
        "target": "type:worker",
        "created_at": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        "metadata": {"task_id": "task-7", "attempt": 2},
        "trace_id": "trace-1",
        "reply_to": "reply:node-1",
        "correlation_id": "m-0",
    }
    fields.update(overrides)
    return Message("order.created", {"order": 17, "items": ["a", "b"]}, **fields)


def test_json_round_trip_preserves_every_field():
    message = _full_message()

    decoded = Message.from_json(message.to_json())

    assert decoded == message
    assert decoded.to_dict() == message.to_dict()


def test_json_round_trip_keeps_unicode_and_writes_it_as_utf8():
    message = Message("chat", {"text": "héllo, 世界 ✓ 🎉", "ключ": "значение"})

    raw = message.to_json()

    assert "世界".encode() in raw  # not \u-escaped
    assert Message.from_json(raw) == message
    assert Message.from_json(raw.decode()) == message


def test_from_json_converts_other_timezones_to_utc():
    created = datetime(2024, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    raw = Message("t", created_at=created).to_json()

    decoded = Message.from_json(raw)

    assert decoded.created_at == created
    assert decoded.created_at.utcoffset() == timedelta(0)


def test_messages_with_different_fields_are_not_equal():
    message = _full_message()

    assert message != message.evolve(payload={"order": 18})
    assert message != message.evolve(trace_id="other")
    assert message != "not a message"


_json_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _json_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_json_text, children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    payload=st.dictionaries(_json_text, _json_values, max_size=5),
    metadata=st.dictionaries(_json_text, _json_values, max_size=3),
    message_type=_json_text.filter(bool),
)
def test_any_json_payload_survives_a_round_trip(payload, metadata, message_type):
    message = Message(message_type, payload, metadata=metadata, sender="agent:a")

    assert Message.from_json(message.to_json()) == message


# --------------------------------------------------------------------------- to_json refusals


@pytest.mark.parametrize(
    "payload",
    [
        {"tags": {"a", "b"}},
        {"value": float("nan")},
        {"value": float("inf")},
        {"when": datetime(2024, 1, 1, tzinfo=UTC)},
        {"raw": b"bytes"},
        {"text": "lone surrogate \ud800"},
    ],
    ids=["set", "nan", "inf", "datetime", "bytes", "surrogate"],
)
def test_to_json_refuses_payloads_json_cannot_carry(payload):
    message = Message("t", payload)

    with pytest.raises(InvalidMessage, match="not JSON-serializable"):
        message.to_json()


def test_to_json_refuses_non_json_metadata():
    with pytest.raises(InvalidMessage):
        Message("t", metadata={"seen": {1, 2}}).to_json()


# --------------------------------------------------------------------------- size cap


def test_to_json_raises_message_too_large_over_max_bytes():
    message = Message("t", {"blob": "x" * 500})
    size = len(message.to_json())

    assert message.to_json(max_bytes=size) == message.to_json()
    with pytest.raises(MessageTooLarge) as excinfo:
        message.to_json(max_bytes=size - 1)
    assert excinfo.value.size == size
    assert excinfo.value.limit == size - 1


def test_from_json_raises_message_too_large_over_max_bytes():
    raw = Message("t", {"blob": "x" * 500}).to_json()

    assert Message.from_json(raw, max_bytes=len(raw)).payload == {"blob": "x" * 500}
    with pytest.raises(MessageTooLarge):
        Message.from_json(raw, max_bytes=len(raw) - 1)


def test_from_json_byte_cap_counts_bytes_for_str_input():
    raw = Message("t", {"text": "ü" * 200}).to_json()
    text = raw.decode()
    assert len(text) < len(raw)

    with pytest.raises(MessageTooLarge):
        Message.from_json(text, max_bytes=len(raw) - 1)


# --------------------------------------------------------------------------- decoding errors


def _valid_dict(**overrides):
    data = _full_message().to_dict()
    data.update(overrides)
    return data


@pytest.mark.parametrize("data", [[], "message", 3, None])
def test_from_dict_rejects_non_objects(data):
    with pytest.raises(InvalidMessage, match="JSON object"):
        Message.from_dict(data)


def test_from_dict_names_unknown_fields():
    with pytest.raises(InvalidMessage, match=r"unknown message field.*colour"):
        Message.from_dict(_valid_dict(colour="blue"))


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("id", 7, "'id'"),
        ("sender", ["agent:a"], "'sender'"),
        ("target", 1, "'target'"),
        ("trace_id", {"x": 1}, "'trace_id'"),
        ("reply_to", 2.5, "'reply_to'"),
        ("correlation_id", True, "'correlation_id'"),
        ("metadata", [1], "'metadata'"),
        ("payload", [1], "payload"),
        ("type", 5, "'type'"),
        ("type", "", "'type'"),
        ("created_at", 1714567890, "'created_at'"),
        ("created_at", "yesterday", "'created_at'"),
    ],
)
def test_from_dict_names_the_field_with_the_wrong_type(field, value, named):
    with pytest.raises(InvalidMessage, match=re.escape(named)):
        Message.from_dict(_valid_dict(**{field: value}))


def test_from_dict_requires_a_type():
    data = _valid_dict()
    del data["type"]

    with pytest.raises(InvalidMessage, match="type"):
        Message.from_dict(data)


def test_from_dict_rejects_naive_timestamps():
    with pytest.raises(InvalidMessage, match="'created_at' must carry a timezone"):
        Message.from_dict(_valid_dict(created_at="2024-05-01T12:00:00"))


@pytest.mark.parametrize("field", ["target", "reply_to", "sender"])
def test_from_dict_rejects_bad_addresses_naming_the_field(field):
    with pytest.raises(InvalidMessage, match=f"'{field}'") as excinfo:
        Message.from_dict(_valid_dict(**{field: "nowhere"}))
    assert isinstance(excinfo.value.__cause__, InvalidAddress)


def test_from_dict_fills_defaults_for_missing_optional_fields():
    message = Message.from_dict({"type": "ping"})

    assert message.type == "ping"
    assert message.payload == {}
    assert message.metadata == {}
    assert message.created_at.tzinfo is not None
    uuid.UUID(message.id)


@pytest.mark.parametrize("raw", [b"{not json", b"", "\x00", b"\xff\xfe\xfa"])
def test_from_json_rejects_invalid_json_as_invalid_message(raw):
    with pytest.raises(InvalidMessage):
        Message.from_json(raw)


@given(st.binary(max_size=200))
def test_from_json_of_arbitrary_bytes_raises_only_invalid_message(raw):
    with contextlib.suppress(InvalidMessage):
        Message.from_json(raw)


def test_from_json_of_deeply_nested_input_raises_invalid_message():
    with pytest.raises(InvalidMessage):
        Message.from_json(b"[" * 100_000)


# --------------------------------------------------------------------------- from_wire


@given(
    payload=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4)
)
def test_from_wire_gives_a_body_without_id_the_same_id_on_every_decode(payload):
    body = json.dumps({"type": "ping", "target": "agent:a", "payload": payload}).encode()

    first, again = Message.from_wire(body), Message.from_wire(body)

    assert first.id == again.id == body_id(body)  # a redelivery is recognised
    assert uuid.UUID(first.id).version == 8
    other = json.dumps({"type": "ping", "target": "agent:b", "payload": payload}).encode()
    assert Message.from_wire(other).id != first.id


def test_from_wire_keeps_the_bodys_id_and_else_takes_the_brokers_message_id():
    with_id = json.dumps({"id": "in-body", "type": "ping"}).encode()
    without = json.dumps({"type": "ping", "id": None}).encode()

    assert Message.from_wire(with_id, message_id="property").id == "in-body"
    assert Message.from_wire(without, message_id="property").id == "property"
    assert Message.from_wire(without, message_id="").id == body_id(without)
    assert Message.from_json(without).id != Message.from_json(without).id  # random each time


def test_from_wire_validates_like_from_json():
    with pytest.raises(MessageTooLarge):
        Message.from_wire(
            b'{"type": "ping", "payload": {"x": "' + b"y" * 100 + b'"}}', max_bytes=50
        )
    with pytest.raises(InvalidMessage):
        Message.from_wire(b'{"type": "ping", "payload": 3}')
    with pytest.raises(InvalidMessage):
        Message.from_wire(b"[1, 2]")


def _original(**fields):
    """A body as the original design's pydantic Message writes it (`model_dump_json`)."""
    data = {
        "id": "3f1c5a52-9d7e-4e53-9a40-0c4c7f6fd6a1",
        "type": "echo",
        "sender": "planner-1",
        "target": "echo-1",
        "payload": {"text": "hi"},
        "created_at": "2024-05-01T12:00:00.123456",
        "metadata": {},
        "trace_id": None,
    }
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def test_from_wire_reads_the_original_designs_format():
    message = Message.from_wire(_original(), served="agent:echo-1")

    assert message.id == "3f1c5a52-9d7e-4e53-9a40-0c4c7f6fd6a1"
    assert message.sender == "agent:planner-1"
    assert message.target == "agent:echo-1"  # the queue it came from
    assert message.created_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert message.payload == {"text": "hi"}
    assert message.reply({"ok": True}).target == "agent:planner-1"


def test_from_wire_fills_what_the_original_format_leaves_out():
    body = _original(id=..., target=..., created_at=..., metadata=..., trace_id=..., payload=...)

    message = Message.from_wire(body, served="type:echo")

    assert message.target == "type:echo"
    assert message.id == body_id(body)
    assert message.payload == {} and message.metadata == {}
    assert message.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("sender", "read_as"),
    [
        ("planner-1", "agent:planner-1"),
        ("user:42", "agent:user:42"),  # not an address kind: an id with a colon
        ("agent:planner-1", "agent:planner-1"),
        ("type:planner", "type:planner"),
        (None, None),
    ],
)
def test_from_wire_reads_a_bare_sender_as_an_agent_id(sender, read_as):
    assert Message.from_wire(_original(sender=sender), served="agent:echo-1").sender == read_as


def test_from_wire_keeps_a_target_that_is_an_address_and_needs_a_queue_for_a_bare_one():
    kept = Message.from_wire(_original(target="agent:other"), served="type:echo")
    assert kept.target == "agent:other"
    with pytest.raises(InvalidMessage, match="'target'"):
        Message.from_wire(_original(target="echo-1"))  # no queue to stand in for it


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"type": 5}, "type"),
        ({"payload": [1, 2]}, "payload"),
        ({"extra": 1}, "extra"),
        ({"sender": "agent:has space"}, "'sender'"),
        ({"sender": "bad id!"}, "'sender'"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"metadata": "x"}, "metadata"),
    ],
)
def test_from_wire_stays_strict_about_everything_else(fields, named):
    with pytest.raises(InvalidMessage, match=re.escape(named)):
        Message.from_wire(_original(**fields), served="agent:echo-1")


def test_from_dict_stays_strict_about_bare_ids_and_naive_timestamps():
    data = json.loads(_original())
    with pytest.raises(InvalidMessage, match="'target'"):
        Message.from_dict(data)
    with pytest.raises(InvalidMessage, match="timezone"):
        Message.from_dict({**data, "sender": None, "target": None})


# --------------------------------------------------------------------------- reply / evolve


def test_reply_goes_back_to_the_sender_correlated_and_on_the_same_trace():
    request = Message(
        "quote.request",
        {"item": "x"},
        sender="agent:buyer",
        target="agent:seller",
        trace_id="trace-9",
        metadata={"task_id": "task-3", "other": "not copied"},
    )

    answer = request.reply({"price": 10})

    assert answer.type == "quote.request.reply"
    assert answer.payload == {"price": 10}
    assert answer.sender == "agent:seller"
    assert answer.target == "agent:buyer"
    assert answer.correlation_id == request.id
    assert answer.trace_id == "trace-9"
    assert answer.metadata == {"task_id": "task-3"}
    assert answer.task_id == "task-3"
    assert answer.id != request.id


def test_reply_prefers_reply_to_over_sender():
    request = Message("q", sender="agent:buyer", target="agent:seller", reply_to="reply:node-1")

    assert request.reply().target == "reply:node-1"


def test_reply_accepts_a_type_and_extra_metadata_without_overriding_task_id_given():
    request = Message("q", sender="agent:a", metadata={"task_id": "task-1"})

    answer = request.reply(type="answer", metadata={"task_id": "task-2", "k": "v"})

    assert answer.type == "answer"
    assert answer.metadata == {"task_id": "task-2", "k": "v"}


def test_reply_without_task_id_has_empty_metadata():
    assert Message("q", sender="agent:a").reply().metadata == {}


def test_evolve_keeps_the_id_and_other_fields():
    message = _full_message()

    changed = message.evolve(target="agent:bob", payload={"new": True})

    assert changed.id == message.id
    assert changed.target == "agent:bob"
    assert changed.payload == {"new": True}
    assert changed.created_at == message.created_at
    assert changed.metadata == message.metadata
    assert message.target == "type:worker"  # original untouched


def test_evolve_can_replace_the_id_and_type():
    changed = _full_message().evolve(id="m-2", type="order.updated")

    assert changed.id == "m-2"
    assert changed.type == "order.updated"


def test_evolve_validates_like_the_constructor():
    with pytest.raises(InvalidMessage):
        _full_message().evolve(payload=[1])


def test_copy_is_an_equal_message_whose_fields_change_alone():
    message = _full_message()

    copied = message.copy()
    copied.target = "agent:other"
    copied.reply_to = "reply:node-2"

    assert copied is not message
    assert copied.evolve(target=message.target, reply_to=message.reply_to) == message
    assert message.target == "type:worker"  # original untouched
    assert copied.payload is message.payload  # shallow, as evolve: payloads are not copied


def test_copy_of_a_subclass_keeps_its_class_and_its_own_attributes():
    class Tagged(Message):
        __slots__ = ("tag",)

    message = Tagged("order.created", {"n": 1})
    message.tag = "blue"

    copied = message.copy()

    assert type(copied) is Tagged
    assert copied.tag == "blue"
    assert copied.id == message.id and copied.payload == {"n": 1}


# --------------------------------------------------------------------------- TaskResult


def test_task_result_defaults_to_succeeded():
    result = TaskResult("task-1")

    assert result.status == "succeeded"
    assert result.result is None
    assert result.error is None


def test_failed_task_result_needs_an_error():
    with pytest.raises(InvalidMessage, match="error"):
        TaskResult("task-1", "failed")


def test_task_result_rejects_unknown_status():
    with pytest.raises(InvalidMessage, match="'done'"):
        TaskResult("task-1", "done")  # type: ignore[arg-type]


def test_task_result_constructors():
    ok = TaskResult.succeeded("task-1", {"n": 3})
    error = TaskError("ValueError", "bad input", retryable=True)
    failed = TaskResult.failed("task-2", error)

    assert (ok.status, ok.result) == ("succeeded", {"n": 3})
    assert (failed.status, failed.error) == ("failed", error)


@pytest.mark.parametrize(
    "result",
    [
        TaskResult.succeeded("task-1", {"n": [1, 2, 3], "ok": True}),
        TaskResult.succeeded("task-2"),
        TaskResult.failed("task-3", TaskError("KeyError", "'k'", retryable=True)),
        TaskResult.failed("task-4", TaskError("RuntimeError", "boom")),
    ],
)
def test_task_result_dict_round_trip(result):
    wire = json.loads(json.dumps(result.to_dict()))

    assert TaskResult.from_dict(wire) == result


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "task_id"),
        ({}, "task_id"),
        ({"task_id": 3}, "task_id"),
        ({"task_id": "t", "status": "failed"}, "error"),
        ({"task_id": "t", "status": "maybe"}, "status"),
        ({"task_id": "t", "status": "failed", "error": "boom"}, "error"),
        ({"task_id": "t", "status": "failed", "error": {"message": "no type"}}, "error"),
    ],
)
def test_task_result_from_dict_rejects_bad_data(data, match):
    with pytest.raises(InvalidMessage, match=match):
        TaskResult.from_dict(data)


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("agent:alice", "agent", "alice"),
        ("agent:worker-1.eu@host:9", "agent", "worker-1.eu@host:9"),
        ("agent:_x", "agent", "_x"),
        ("agent:42", "agent", "42"),
        ("type:worker", "type", "worker"),
        ("type:billing.v2-beta", "type", "billing.v2-beta"),
        ("topic:orders", "topic", "orders"),
        ("topic:orders.created.eu-1", "topic", "orders.created.eu-1"),
        ("reply:node-1", "reply", "node-1"),
    ],
)
def test_parse_address_accepts_each_kind(text, kind, value):
    address = parse_address(text)

    assert address == Address(kind, value)
    assert str(address) == text
    assert not address.is_pattern


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice",
        "agent",
        "agent:",
        "user:alice",
        "Agent:alice",
        " agent:alice",
        "agent:-alice",
        "agent:.alice",
        "agent:al ice",
        "agent:alice\n",
        "type:1worker",
        "type:work:er",
        "type:",
        "topic:",
        "topic:.",
        "topic:orders.",
        "topic:.orders",
        "topic:orders..created",
        "topic:orders created",
        "topic:orders.cre*ted",
        "topic:orders.#x",
        "reply:",
    ],
)
def test_parse_address_rejects_malformed_addresses(text):
    with pytest.raises(InvalidAddress):
        parse_address(text)


@pytest.mark.parametrize("value", [None, 3, b"agent:alice", ["agent:alice"]])
def test_parse_address_rejects_non_strings(value):
    with pytest.raises(InvalidAddress, match="string"):
        parse_address(value)  # type: ignore[arg-type]


def test_invalid_address_is_also_a_value_error_and_says_what_to_write():
    with pytest.raises(ValueError, match="agent:<id>"):
        parse_address("alice")


@pytest.mark.parametrize("text", ["topic:orders.*", "topic:audit.#", "topic:#", "topic:*.x.#"])
def test_wildcards_are_rejected_unless_patterns_are_allowed(text):
    with pytest.raises(InvalidAddress, match="wildcards"):
        parse_address(text)

    address = parse_address(text, allow_patterns=True)
    assert address.is_pattern
    assert str(address) == text


@pytest.mark.parametrize("text", ["agent:a*", "type:#", "agent:*"])
def test_wildcards_are_only_for_topics(text):
    with pytest.raises(InvalidAddress):
        parse_address(text, allow_patterns=True)


def test_concrete_topic_is_not_a_pattern_even_when_patterns_allowed():
    assert not parse_address("topic:orders.created", allow_patterns=True).is_pattern


@pytest.mark.parametrize("kind", ["agent", "type", "topic", "reply"])
def test_address_value_is_limited_to_200_characters(kind):
    assert parse_address(f"{kind}:{'a' * 200}").value == "a" * 200
    with pytest.raises(InvalidAddress, match="200"):
        parse_address(f"{kind}:{'a' * 201}")


_id_values = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:@\-]*", fullmatch=True)
_type_values = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]*", fullmatch=True)
_topic_words = st.from_regex(r"[A-Za-z0-9_\-]+", fullmatch=True)
_topic_values = st.lists(_topic_words, min_size=1, max_size=6).map(".".join)
_valid_addresses = st.one_of(
    _id_values.map("agent:{}".format),
    _id_values.map("reply:{}".format),
    _type_values.map("type:{}".format),
    _topic_values.map("topic:{}".format),
).filter(lambda text: len(text.partition(":")[2]) <= 200)


@given(_valid_addresses)
def test_valid_addresses_round_trip_through_str(text):
    address = parse_address(text)

    assert str(address) == text
    assert parse_address(str(address)) == address


@given(st.text(max_size=60))
def test_parse_address_of_arbitrary_text_raises_only_invalid_address(text):
    for allow_patterns in (False, True):
        try:
            address = parse_address(text, allow_patterns=allow_patterns)
        except InvalidAddress:
            continue
        assert str(address) == text


# --------------------------------------------------------------------------- topic matching


def _reference_topic_matches(pattern: str, key: str) -> bool:
    """Regex reference: every word, including the first, carries a leading dot.

    With `.w1.w2` for the key, `*` is one `.word` and `#` is zero or more `.word`s, so the dots
    around `#` vanish together with it when it matches nothing.
    """
    parts = []
    for word in pattern.split("."):
        if word == "*":
            parts.append(r"\.[^.]+")
        elif word == "#":
            parts.append(r"(?:\.[^.]+)*")
        else:
            parts.append(r"\." + re.escape(word))
    dotted_key = "".join("." + word for word in key.split("."))
    return re.fullmatch("".join(parts), dotted_key) is not None


_small_words = st.sampled_from(["a", "b", "c"])
_keys = st.lists(_small_words, min_size=1, max_size=5).map(".".join)
_patterns = st.lists(st.sampled_from(["a", "b", "*", "#"]), min_size=1, max_size=5).map(".".join)


@given(_patterns, _keys)
def test_topic_matches_agrees_with_a_regex_reference(pattern, key):
    assert topic_matches(pattern, key) == _reference_topic_matches(pattern, key)


@given(_keys)
def test_a_concrete_key_matches_itself_and_hash(key):
    assert topic_matches(key, key)
    assert topic_matches("#", key)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("orders.*", "orders.created", True),
        ("orders.*", "orders", False),
        ("orders.*", "orders.created.eu", False),
        ("orders.#", "orders", True),
        ("orders.#", "orders.created.eu", True),
        ("#.eu", "eu", True),
        ("#.eu", "orders.created.eu", True),
        ("#.eu", "orders.created.us", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.x.y", False),
        ("*.*", "a", False),
        ("orders", "orders.created", False),
    ],
)
def test_topic_matches_examples(pattern, key, expected):
    assert topic_matches(pattern, key) is expected
    assert _reference_topic_matches(pattern, key) is expected


def test_a_message_from_the_wire_nested_deeper_than_the_limit_is_invalid() -> None:
    from mas.messages import MAX_DEPTH

    deep: object = {}
    for _ in range(MAX_DEPTH):
        deep = {"a": deep}
    with pytest.raises(InvalidMessage, match="payload nests deeper than"):
        Message.from_dict({"type": "t", "payload": deep})
    with pytest.raises(InvalidMessage, match="metadata nests deeper than"):
        Message.from_dict({"type": "t", "metadata": {"m": [deep]}})
    shallow = Message.from_dict({"type": "t", "payload": {"a": [{"b": 1}]}})
    assert shallow.payload == {"a": [{"b": 1}]}
