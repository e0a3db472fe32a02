"""Validation of projected volumes: several sources (token, configMap, secret, downwardAPI) in one directory.

The `kube-api-access-*` volume the ServiceAccount admission adds is one of these,
so every pod with an API token passes here. Kubernetes' rules and messages
(validateProjectedVolumeSource): each source names exactly one kind, paths are
relative and unique across sources, a token lives at least 10 minutes and at
most 2^32 seconds, a downwardAPI item reads one field.
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.apiserver.validation.field import Errors, forbidden, invalid, required
from proto import core_pb2

MIN_TOKEN_SECONDS = 600  # ten minutes
MAX_TOKEN_SECONDS = 1 << 32
_SOURCES = (("secret", "secret"), ("downward_api", "downwardAPI"), ("config_map", "configMap"),
            ("service_account_token", "serviceAccountToken"))
# The pod fields a downwardAPI volume may project (validVolumeDownwardAPIFieldPathExpressions).
DOWNWARD_FIELDS = ("metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace",
                   "metadata.uid")


def validate_projected(source: core_pb2.ProjectedVolumeSource, path: str,
                       key_to_paths: Callable[..., Errors], relative_path: Callable[[str, str], Errors],
                       file_mode: Callable[[int, str], Errors]) -> Errors:
    """What is wrong with a projected volume at `path` (`spec.volumes[0].projected`).

    The pod spec's own checks for items, relative paths and modes are passed in, so
    one set of rules covers configMap, secret and projected volumes alike.
    """
    errors: Errors = []
    if source.HasField("default_mode"):
        errors += file_mode(source.default_mode, f"{path}.defaultMode")
    seen: set[str] = set()
    for i, projection in enumerate(source.sources):
        p = f"{path}.sources[{i}]"
        named = [(field, json) for field, json in _SOURCES if projection.HasField(field)]  # type: ignore[arg-type]
        if len(named) != 1:
            errors.append(forbidden(p, "may not specify more than 1 volume type per source") if named
                          else required(p, "must specify exactly one volume type"))
            continue
        field, json = named[0]
        q = f"{p}.{json}"
        paths: list[tuple[str, str]] = []  # (path, where)
        if field in ("secret", "config_map"):
            item_source = getattr(projection, field)
            if not item_source.name:
                errors.append(required(f"{q}.name"))
            errors += key_to_paths(item_source.items, f"{q}.items")
            paths += [(item.path, f"{q}.items[{j}].path") for j, item in enumerate(item_source.items)]
        elif field == "downward_api":
            for j, item in enumerate(projection.downward_api.items):
                errors += _downward_item(item, f"{q}.items[{j}]", relative_path, file_mode)
                paths.append((item.path, f"{q}.items[{j}].path"))
        else:
            token = projection.service_account_token
            if token.expiration_seconds < MIN_TOKEN_SECONDS:
                errors.append(invalid(f"{q}.expirationSeconds", token.expiration_seconds,
                                      "may not specify a duration less than 10 minutes"))
            elif token.expiration_seconds > MAX_TOKEN_SECONDS:
                errors.append(invalid(f"{q}.expirationSeconds", token.expiration_seconds,
                                      "may not specify a duration larger than 2^32 seconds"))
            if not token.path:
                errors.append(required(f"{q}.path"))
            else:
                errors += relative_path(token.path, f"{q}.path")
                paths.append((token.path, f"{q}.path"))
        for file_path, where in paths:
            if file_path and file_path in seen:
                errors.append(invalid(where, file_path, "conflicting duplicate paths"))
            seen.add(file_path)
    return errors


def _downward_item(item: core_pb2.DownwardAPIVolumeFile, path: str, relative_path: Callable[[str, str], Errors],
                   file_mode: Callable[[int, str], Errors]) -> Errors:
    errors: Errors = []
    if not item.path:
        errors.append(required(f"{path}.path"))
    else:
        errors += relative_path(item.path, f"{path}.path")
    if item.HasField("mode"):
        errors += file_mode(item.mode, f"{path}.mode")
    has_field, has_resource = item.HasField("field_ref"), item.HasField("resource_field_ref")
    if has_field and has_resource:
        errors.append(invalid(path, "resource", "fieldRef and resourceFieldRef can not be specified simultaneously"))
    elif not has_field and not has_resource:
        errors.append(required(path, "one of fieldRef and resourceFieldRef is required"))
    elif has_field:
        field_path = item.field_ref.field_path
        if not field_path:
            errors.append(required(f"{path}.fieldRef.fieldPath"))
        elif field_path not in DOWNWARD_FIELDS and not field_path.startswith(("metadata.labels[",
                                                                              "metadata.annotations[")):
            supported = ", ".join(f'"{f}"' for f in DOWNWARD_FIELDS)
            errors.append(invalid(f"{path}.fieldRef.fieldPath", field_path,
                                  f"error converting fieldPath: field label not supported: {field_path} "
                                  f"(supported values: {supported})"))
    elif not item.resource_field_ref.resource:
        errors.append(required(f"{path}.resourceFieldRef.resource"))
    return errors
