"""The LoadBalancer address pool: parsing `--lb-pool` and choosing a free address (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection


class PoolError(ValueError):
    """The pool flag does not describe a range of IPv4 addresses."""


def parse_pool(text: str) -> list[str]:
    """Addresses of "FIRST-LAST" or a CIDR ("192.168.56.200-192.168.56.250", "10.0.0.0/28"), in order."""
    try:
        if "-" in text:
            first, last = (ipaddress.IPv4Address(part.strip()) for part in text.split("-", 1))
            if last < first:
                raise PoolError(f"pool {text!r}: the last address is before the first")
            return [str(ipaddress.IPv4Address(i)) for i in range(int(first), int(last) + 1)]
        return [str(ip) for ip in ipaddress.IPv4Network(text.strip()).hosts()]
    except ValueError as err:
        raise PoolError(f"pool {text!r}: {err}") from None


def choose(pool: list[str], in_use: Collection[str], requested: str = "") -> str | None:
    """The address to give a Service: the one it asked for if free, else the lowest free one."""
    if requested:
        return requested if requested in pool and requested not in in_use else None
    return next((ip for ip in pool if ip not in in_use), None)
