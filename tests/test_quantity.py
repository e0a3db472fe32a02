"""Quantities as Kubernetes writes them: suffixes, exponents, and the refusals (proto/quantity.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proto.quantity import QuantityError, parse_quantity


@pytest.mark.parametrize(("text", "value"), [
    ("1Ki", Decimal(1024)), ("1.5Gi", Decimal(1610612736)), ("1000Ei", Decimal(1000 * 2**60)),
    ("1E", Decimal("1e18")), ("2e3", Decimal(2000)), ("3E-2", Decimal("0.03")), ("250m", Decimal("0.25")),
    ("-1", Decimal(-1)), (".5", Decimal("0.5")), (7, Decimal(7)),
])
def test_suffixes_and_exponents(text: str | int, value: Decimal) -> None:
    # "E" and "Ei" are suffixes, not the start of an exponent: 1000Ei once crashed the parser.
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["1Zi", "Ei", "1e", "1 Ki", "1.2.3", "", "1Kii"])
def test_malformed_quantities_are_refused_naming_the_text(text: str) -> None:
    with pytest.raises(QuantityError, match=r"quantities must match|unable to parse"):
        parse_quantity(text)
