"""Resource quantities ("250m", "0.5", "64Mi", "1Gi", "1e3"): the one parser in Flotilla.

Kubernetes writes CPU and memory as quantities: a decimal number with an optional
binary suffix (Ki..Ei), decimal suffix (n, u, m, k, M..E) or exponent (e3). Every
component that reads requests, limits, capacity or HPA targets goes through here.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_UP, Decimal, InvalidOperation

_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[eE][+-]?[0-9]+)|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")
_EXPONENT = re.compile(r"[eE][+-]?[0-9]+")

_SUFFIX: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


class QuantityError(ValueError):
    """Text that is not a Kubernetes quantity."""


def parse_quantity(text: str | int | float) -> Decimal:
    """The exact value of a quantity; raises QuantityError naming the bad text."""
    if isinstance(text, bool):
        raise QuantityError(f"quantities must match the regular expression {_QUANTITY.pattern!r}: {text!r}")
    if isinstance(text, int | float):
        text = repr(text) if isinstance(text, float) else str(text)
    match = _QUANTITY.match(text.strip()) if isinstance(text, str) else None
    if not match or text != text.strip():
        raise QuantityError(
            f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text!r}"
        )
    number, suffix = match.group(1), match.group(2) or ""
    try:
        value = Decimal(number)
        if suffix in _SUFFIX:  # before the exponent form: "E" and "Ei" are suffixes too
            return value * _SUFFIX[suffix]
        if _EXPONENT.fullmatch(suffix):
            return value * (Decimal(10) ** int(suffix[1:]))
    except InvalidOperation as exc:
        raise QuantityError(f"invalid quantity {text!r}") from exc
    raise QuantityError(f"unable to parse quantity's suffix: {text!r}")


def is_quantity(text: str) -> bool:
    try:
        parse_quantity(text)
    except QuantityError:
        return False
    return True


def milli_value(text: str) -> int:
    """The quantity in thousandths, rounded up (CPU "250m" -> 250, "1" -> 1000)."""
    return math.ceil(parse_quantity(text) * 1000)


def int_value(text: str) -> int:
    """The quantity as a whole number, rounded up (memory "64Mi" -> 67108864)."""
    return math.ceil(parse_quantity(text))


def format_milli(millis: int) -> str:
    """CPU as kubectl shows it: whole cores when exact, else millicores ("1500m")."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_bytes(value: int) -> str:
    """Memory in the largest binary unit that divides it exactly ("128Mi")."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = int(_SUFFIX[suffix])
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


# Kubernetes' Quantity formats: how a value is written back (resource.Format). A
# quantity keeps the format it was written in, and a sum takes its first term's.
BINARY_SI = "BinarySI"  # 64Mi, 1Gi
DECIMAL_SI = "DecimalSI"  # 500m, 2, 100M
DECIMAL_EXPONENT = "DecimalExponent"  # 1e3

_NANO = Decimal("1e9")
_DECIMAL_SUFFIXES = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}


def quantity_format(text: str) -> str:
    """The format `text` is written in (BinarySI, DecimalSI or DecimalExponent)."""
    match = _QUANTITY.match(text.strip())
    suffix = (match.group(2) or "") if match else ""
    if suffix.endswith("i"):
        return BINARY_SI
    if suffix[:1] in ("e", "E"):
        return DECIMAL_EXPONENT
    return DECIMAL_SI


def format_quantity(value: Decimal, fmt: str = DECIMAL_SI) -> str:
    """`value` as Kubernetes writes a Quantity of format `fmt` (its canonical String()).

    Below one nano it rounds up, as Kubernetes does. BinarySI uses the largest Ki..Ei
    that divides the value exactly, falling back to decimal for values under 1024 or
    with a fraction ("1536Mi", "512", "500m"); decimal formats use the largest power
    of 1000 that leaves a whole number ("1500m", "2", "1200k" or "1200e3").
    """
    value = (value * _NANO).to_integral_value(rounding=ROUND_UP) / _NANO
    if value == 0:
        return "0"
    if fmt == BINARY_SI and abs(value) >= 1024 and value == value.to_integral_value():
        number, power = int(value), 0
        while power < 6 and number % 1024 == 0:
            number, power = number // 1024, power + 1
        return f"{number}{('', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei')[power]}"
    exponent = next(e for e in range(18, -12, -3) if _whole(value.scaleb(-e)))
    mantissa = int(value.scaleb(-exponent))
    if fmt == DECIMAL_EXPONENT:
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    return f"{mantissa}{_DECIMAL_SUFFIXES[exponent]}"


def _whole(value: Decimal) -> bool:
    return value == value.to_integral_value()
