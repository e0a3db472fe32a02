"""Fuzzing: hostile manifests through proto/manifest.py and kctl's file reader.

Whatever a manifest holds (wrong types, unknown fields, huge strings, deep
nesting, text that was not UTF-8), parsing it either yields a message that
serialises and prints back, or raises the project's clear error (an
`ApiError` such as Invalid, naming the field; a `CliError` for a file) with a
message. Any other exception is a crash, and fails the test with the example.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from kctl.errors import CliError
from kctl.manifests import load
from proto import manifest
from proto.errors import ApiError
from tests.faults.fuzzing import BASES, Hostile, base, fuzz_settings, hostile_manifests, invalid_utf8


@fuzz_settings(500)
@given(hostile_manifests())
# Inputs that crashed the parser once (found by the deep profile), kept in every run:
@example(Hostile(base("Service"), (), "new-field", None, key="\ud800"))  # a lone surrogate as a field name
@example(Hostile(base("Service"), ("metadata",), "new-field", "x", key="\udcff"))  # undecodable byte as a name
@example(Hostile(base("Pod"), ("metadata", "name"), "bad-utf8", "\udcff\udcfe"))
@example(Hostile(base("Service"), ("apiVersion",), "deep", None, depth=5_000))  # str() of it recursed
@example(Hostile(base("Deployment"), ("spec", "replicas"), "deep", None, depth=5_000, as_list=True))  # repr()
def test_hostile_manifests_parse_or_fail_clearly(hostile: Hostile) -> None:
    try:
        message = manifest.from_dict(hostile.build())
    except ApiError as err:
        assert str(err), "an error without a message"
        return
    message.SerializeToString()
    manifest.to_dict(message)


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, RecursionError, UnicodeEncodeError):
        return "{"


file_bodies = st.one_of(
    hostile_manifests().map(lambda h: _dump(h.build())).map(lambda text: text.encode("utf-8", "surrogateescape")),
    st.binary(max_size=200),
    st.sampled_from(BASES).map(_dump).map(str.encode).flatmap(
        lambda raw: st.integers(0, max(0, len(raw) - 1)).flatmap(
            lambda at: st.binary(min_size=1, max_size=4).map(lambda junk: raw[:at] + junk + raw[at + 1:]))),
    st.sampled_from([2_000, 20_000]).map(lambda n: ("[" * n + "]" * n).encode()),
    st.sampled_from([2_000, 20_000]).map(lambda n: ("{a: " * n + "1" + "}" * n).encode()),
    st.sampled_from([2_000, 20_000]).map(lambda n: ('{"a": ' * n + "1" + "}" * n).encode()),
    invalid_utf8.map(lambda s: f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {s}\n".encode(
        "utf-8", "surrogateescape")),
)


@fuzz_settings(60)
@given(file_bodies, st.sampled_from([".yaml", ".json"]))
def test_hostile_manifest_files_load_or_fail_clearly(body: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(body)
        try:
            docs = load([str(path)], namespace="default", explicit_namespace=False)
        except CliError as err:
            assert str(err), "an error without a message"
            return
    for doc in docs:
        doc.obj.SerializeToString()
