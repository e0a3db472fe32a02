"""Flag types shared by kctl's commands: values checked where the user typed them.

A number bound for an int32 API field (replicas, ports, limits) that does not
fit is a usage error naming the flag — what kubectl's flag parsing gives —
rather than the ValueError protobuf raises when the number meets the field.
"""

from __future__ import annotations

from typing import Any

import click

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class Int32(click.ParamType):
    """An integer that fits a 32-bit API field."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        number: int = click.INT.convert(value, param, ctx)
        if not INT32_MIN <= number <= INT32_MAX:
            self.fail(f"{number} is out of range: it must fit a 32-bit integer (at most {INT32_MAX})", param, ctx)
        return number


INT32 = Int32()
