"""Validation: the apiserver's last word on whether an object may be stored (being split by API group)."""

from controlplane.apiserver.validation.core import (
    VOLUME_SOURCES,
    is_dns1123_label,
    is_port_name,
    is_qualified_name,
    validate,
)

__all__ = ["VOLUME_SOURCES", "is_dns1123_label", "is_port_name", "is_qualified_name", "validate"]
