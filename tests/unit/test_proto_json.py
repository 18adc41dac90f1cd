"""chronos.read_model.proto_json against protobuf's own json_format, on generated
messages of every event payload type (and the envelope)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from chronos.read_model.proto_json import message_json
from chronos.v1 import events_pb2

MESSAGE_TYPES = sorted(events_pb2.DESCRIPTOR.message_types_by_name)
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=12)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=12)
    if field.type == FieldDescriptor.TYPE_ENUM:
        # Known numbers, and one no version of the enum has.
        return st.sampled_from([value.number for value in field.enum_type.values] + [77])
    low, high = _INT_RANGES[field.type]
    return st.one_of(st.just(0), st.integers(low, high))


def _fill(message: Message, draw: st.DrawFn) -> None:
    """Sets a random subset of ``message``'s fields to random values, recursively."""
    descriptor: Descriptor = message.DESCRIPTOR
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        target = getattr(message, field.name)
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            entries = draw(
                st.dictionaries(
                    _scalar(message_type.fields_by_name["key"]),
                    _scalar(message_type.fields_by_name["value"]),
                    max_size=3,
                )
            )
            target.update(entries)
        elif message_type is not None and message_type.full_name == "google.protobuf.Timestamp":
            target.seconds = draw(st.integers(-62135596800, 253402300799))
            target.nanos = draw(st.sampled_from([0, 1_000, 1_000_000, 123_456_789]))
        elif message_type is not None:
            target.SetInParent()
            _fill(target, draw)
        else:
            setattr(message, field.name, draw(_scalar(field)))


@st.composite
def messages(draw: st.DrawFn, name: str) -> Message:
    message: Message = getattr(events_pb2, name)()
    _fill(message, draw)
    return message


@pytest.mark.parametrize("name", MESSAGE_TYPES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_equals_message_to_dict(name: str, data: st.DataObject) -> None:
    message = data.draw(messages(name))
    expected = json_format.MessageToDict(message, preserving_proto_field_name=True)
    assert message_json(message) == expected


def test_every_event_payload_type_is_converted_here_not_handed_on() -> None:
    from chronos.read_model import proto_json

    for name in MESSAGE_TYPES:
        message_json(getattr(events_pb2, name)())
        assert proto_json._plans[getattr(events_pb2, name).DESCRIPTOR] is not None, name
