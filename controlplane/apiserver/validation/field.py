"""Field errors: how validation says what is wrong, in apimachinery's field.Error words.

Every validator returns (field path, message) pairs built here, so a message reads
exactly as kubectl prints it ("Required value", "Invalid value: x: ...",
'Unsupported value: "Foo": supported values: ...') and a user can search for it.
The few generic checks every API group uses (enums, non-negative counts) live
here too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from decimal import Decimal

from google.protobuf import json_format
from google.protobuf.message import Message

FieldError = tuple[str, str]
Errors = list[FieldError]


def _show(value: object) -> str:
    """A value as field.Error prints it: strings quoted, numbers bare, objects as JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, Message):
        value = json_format.MessageToDict(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def required(path: str, detail: str = "") -> FieldError:
    return path, f"Required value: {detail}" if detail else "Required value"


def invalid(path: str, value: object, detail: str) -> FieldError:
    return path, f"Invalid value: {_show(value)}: {detail}"


def unsupported(path: str, value: str, supported: Sequence[str]) -> FieldError:
    return path, f"Unsupported value: {_show(value)}: supported values: " + ", ".join(
        _show(s) for s in supported)


def forbidden(path: str, detail: str) -> FieldError:
    return path, f"Forbidden: {detail}"


def duplicate(path: str, value: object, detail: str = "") -> FieldError:
    return path, f"Duplicate value: {_show(value)}" + (f": {detail}" if detail else "")


def not_found(path: str, value: object) -> FieldError:
    return path, f"Not found: {_show(value)}"


def too_long(path: str, limit: int) -> FieldError:
    return path, f"Too long: may not be more than {limit} bytes"


def too_many(path: str, count: int, limit: int) -> FieldError:
    """field.TooMany: a list longer than the API allows."""
    return path, f"Too many: {count}: must have at most {limit} items"


def check_format(check: Callable[[str], list[str]], value: str, path: str) -> Errors:
    return [invalid(path, value, msg) for msg in check(value)]


def one_of(value: str, path: str, supported: Sequence[str], *, optional: bool = False) -> Errors:
    """An enum field: Required when empty (unless optional), Unsupported when unknown."""
    if not value:
        return [] if optional else [required(path)]
    return [] if value in supported else [unsupported(path, value, supported)]


def nonnegative(value: int, path: str) -> Errors:
    return [invalid(path, value, "must be greater than or equal to 0")] if value < 0 else []


def at_least_one(value: int, path: str) -> Errors:
    return [invalid(path, value, "must be greater than or equal to 1")] if value < 1 else []
