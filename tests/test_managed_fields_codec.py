"""managedFields' fieldsV1 survives every codec: it is arbitrary JSON kept as bytes (FieldsV1's raw_json option).

Server-side apply records who owns which field in `fieldsV1` ({"f:spec": ...});
an apiserver that dropped or mangled it would forget every owner between two
applies, so the manifest codec, the HTTP JSON encoder and kubectl's protobuf
wire form must all carry it unchanged.
"""

from __future__ import annotations

import pytest

from controlplane.apiserver.http import codec
from proto import manifest, wire
from proto.errors import Invalid

FIELDS = {"f:data": {"f:a": {}, ".": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}
CONFIGMAP = {
    "apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "owned", "labels": {"app": "x"},
                 "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                                    "fieldsType": "FieldsV1", "fieldsV1": FIELDS}]},
    "data": {"a": "b"},
}


def test_fields_v1_is_stored_as_json_bytes_and_shown_as_the_object() -> None:
    cm = manifest.from_dict(CONFIGMAP)
    assert cm.metadata.managed_fields[0].fields_v1.raw.startswith(b'{"f:data"')  # type: ignore[attr-defined]
    assert manifest.to_dict(cm)["metadata"]["managedFields"][0]["fieldsV1"] == FIELDS


def test_the_http_encoder_and_the_wire_codec_agree_with_the_manifest_codec() -> None:
    cm = manifest.from_dict(CONFIGMAP)
    assert codec.object_dict(cm) == manifest.to_dict(cm)
    assert wire.decode(wire.encode(cm))["metadata"]["managedFields"][0]["fieldsV1"] == FIELDS


def test_fields_v1_that_is_not_json_is_refused_with_its_path() -> None:
    bad = {**CONFIGMAP, "metadata": {"name": "x", "managedFields": [{"fieldsV1": {"f:a": float("nan")}}]}}
    with pytest.raises(Invalid) as err:
        manifest.from_dict(bad)
    assert "metadata.managedFields[0].fieldsV1" in str(err.value)
