"""Protobuf messages to protobuf JSON objects, as ``json_format.MessageToDict(message,
preserving_proto_field_name=True)`` builds them, several times faster.

The events index holds every event's payload as protobuf JSON, so a rebuild converts
every event in the log: ``MessageToDict`` looks up each enum value's JSON options and
each field's map-entry flag on every call, and was the largest single cost of a
rebuild. This walks ``ListFields()`` with each field's conversion worked out once per
field descriptor. It covers the field types the event payloads use (strings, bytes,
32- and 64-bit integers, bools, enums, nested messages, ``Timestamp``, maps with
scalar values); a message type with any other field (floats, ``Any``, ``Struct``, ...)
is handed to ``MessageToDict`` whole, so the answer is always protobuf JSON.
``tests/unit/test_proto_json.py`` compares the two on generated messages of every
event type.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_Convert = Callable[[Any], Any]

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
# Types whose JSON value is the Python value itself.
_PLAIN_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_BOOL,
    }
)
_TIMESTAMP = "google.protobuf.Timestamp"

# Per message descriptor: (field name, conversion) of each field, or None when the type
# has a field this module does not convert (MessageToDict then does the whole message).
_plans: dict[Descriptor, dict[str, _Convert] | None] = {}


def message_json(message: Message) -> dict[str, Any]:
    """``message`` as a protobuf JSON object (proto field names, defaults left out)."""
    plan = _plan(message.DESCRIPTOR)
    if plan is None:
        result: dict[str, Any] = json_format.MessageToDict(
            message, preserving_proto_field_name=True
        )
        return result
    return {field.name: plan[field.name](value) for field, value in message.ListFields()}


def _plan(descriptor: Descriptor) -> dict[str, _Convert] | None:
    if descriptor not in _plans:
        _plans[descriptor] = None  # a recursive type converts through MessageToDict
        converts: dict[str, _Convert] = {}
        for field in descriptor.fields:
            convert = _field_conversion(field)
            if convert is None:
                return None
            converts[field.name] = convert
        _plans[descriptor] = converts
    return _plans[descriptor]


def _field_conversion(field: FieldDescriptor) -> _Convert | None:
    """How one field's value becomes JSON; None when this module does not know how."""
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        value_field = message_type.fields_by_name["value"]
        if value_field.message_type is not None:
            return None
        key_field = message_type.fields_by_name["key"]
        value = _scalar_conversion(value_field)
        if value is None or key_field.type == FieldDescriptor.TYPE_BOOL:
            return None  # bool keys are spelled "true" / "false" in JSON
        # JSON object keys are strings, whatever the map's key type.
        return lambda entries: {str(k): value(v) for k, v in entries.items()}
    single = _single_conversion(field)
    if single is None:
        return None
    if field.is_repeated:
        return lambda values: [single(item) for item in values]
    return single


def _single_conversion(field: FieldDescriptor) -> _Convert | None:
    message_type = field.message_type
    if message_type is None:
        return _scalar_conversion(field)
    if message_type.full_name == _TIMESTAMP:
        return lambda timestamp: timestamp.ToJsonString()
    if message_type.full_name.startswith("google.protobuf."):
        return None  # other well-known types have JSON forms of their own
    if _plan(message_type) is None:
        return None
    return message_json


def _scalar_conversion(field: FieldDescriptor) -> _Convert | None:
    if field.type in _PLAIN_TYPES:
        return _same
    if field.type in _INT64_TYPES:
        return str
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda data: base64.b64encode(data).decode("ascii")
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = {value.number: value.name for value in field.enum_type.values}
        # A number this code's enum lacks stays a number, as in MessageToDict.
        return lambda number: names.get(number, number)
    return None


def _same(value: Any) -> Any:
    return value
