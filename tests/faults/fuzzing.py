"""Hypothesis strategies shared by the fuzz tests: hostile manifests and hostile values.

A hostile manifest starts from a real one (tests/manifests/, the
kubernetes.io examples) and is changed at one place: a value of the wrong
type, a random new field, a huge string, a very deep nesting, a string that
was not valid UTF-8 (decoded with surrogateescape, as Python hands such bytes
over), a random key. Starting from a valid manifest keeps most examples deep
in the parser instead of failing at `kind`.

Example counts come from the hypothesis profile: `flotilla-ci` (default,
derandomized, so every run tries the same examples) or `flotilla-deep`
(FLOTILLA_FUZZ_PROFILE=flotilla-deep, thousands of random examples).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"

settings.register_profile("flotilla-ci", derandomize=True, max_examples=150, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("flotilla-deep", max_examples=3000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
PROFILE = os.environ.get("FLOTILLA_FUZZ_PROFILE", "flotilla-ci")


def fuzz_settings(ci_examples: int) -> settings:
    """The active profile, with the CI example count scaled for one test (the deep profile keeps its own)."""
    base = settings.get_profile(PROFILE)
    return settings(base, max_examples=ci_examples) if PROFILE == "flotilla-ci" else base


def base_manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))
    return docs


BASES = base_manifests()


def base(kind: str) -> dict[str, Any]:
    return next(doc for doc in BASES if doc.get("kind") == kind)

# Text that is not valid UTF-8 reaches Python as lone surrogates (surrogateescape).
invalid_utf8 = st.binary(min_size=1, max_size=16).filter(lambda b: _not_utf8(b)).map(
    lambda b: b.decode("utf-8", "surrogateescape"))
any_text = st.one_of(st.text(max_size=20), st.text(st.characters(codec=None, categories=None), max_size=20),
                     invalid_utf8)
huge_text = st.sampled_from([10_000, 300_000, 3_000_000]).map(lambda n: "x" * n)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63 - 2, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), any_text, st.binary(max_size=8),
    st.sampled_from(["", "0", "-1", "1.5", "1e400", "100Mi", "abc", "2026-13-45T99:00:00Z", "http", "nan"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.one_of(any_text, st.integers()), inner, max_size=4), max_leaves=12)


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def nested(depth: int, leaf: Any, *, as_list: bool) -> Any:
    """`depth` levels of lists or objects around `leaf` (built iteratively: no recursion here)."""
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a manifest that holds a value: dict keys and list indexes."""
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.extend(paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found.extend(paths(value, (*prefix, i)))
    return found


def replace_at(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(doc)
    holder = out
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    return out


def add_at(doc: Any, path: tuple[Any, ...], key: Any, value: Any) -> Any:
    """A new key next to `path`'s value, when that value is an object."""
    out = copy.deepcopy(doc)
    holder = out
    for step in path:
        holder = holder[step]
    if isinstance(holder, dict):
        holder[key] = value
    return out


class Hostile:
    """One hostile manifest, built when asked: hypothesis's printer cannot show 50,000 levels or 3 MB."""

    def __init__(self, base: dict[str, Any], path: tuple[Any, ...], change: str, value: Any, *,
                 key: Any = None, depth: int = 0, as_list: bool = False) -> None:
        self.base, self.path, self.change, self.value = base, path, change, value
        self.key, self.depth, self.as_list = key, depth, as_list

    def build(self) -> Any:
        if self.change == "new-field":
            return add_at(self.base, self.path, self.key, self.value)
        if self.change == "deep":
            return replace_at(self.base, self.path, nested(self.depth, self.value, as_list=self.as_list))
        if self.change == "whole":
            return self.value
        return replace_at(self.base, self.path, self.value)

    def __repr__(self) -> str:
        shown = repr(self.value)
        shown = shown if len(shown) < 200 else f"{shown[:100]}... ({len(shown)} characters)"
        extra = f", key={self.key!r}" if self.change == "new-field" else (
            f", depth={self.depth}, as_list={self.as_list}" if self.change == "deep" else "")
        return (f"Hostile({self.base.get('kind')!r} at {'.'.join(map(str, self.path)) or '<root>'}: "
                f"{self.change} {shown}{extra})")


@st.composite
def hostile_manifests(draw: st.DrawFn) -> Hostile:
    """A real manifest with one hostile change."""
    doc = draw(st.sampled_from(BASES))
    path = draw(st.sampled_from(paths(doc)))
    change = draw(st.sampled_from(["wrong-type", "new-field", "huge", "deep", "bad-utf8", "whole"]))
    if change == "new-field":
        return Hostile(doc, path, change, draw(values), key=draw(st.one_of(any_text, st.integers())))
    if change == "huge":
        return Hostile(doc, path, change, draw(huge_text))
    if change == "deep":
        return Hostile(doc, path, change, draw(scalars), depth=draw(st.sampled_from([50, 500, 5_000, 50_000])),
                       as_list=draw(st.booleans()))
    if change == "bad-utf8":
        return Hostile(doc, path, change, draw(invalid_utf8))
    return Hostile(doc, path, change, draw(values))  # "wrong-type", or "whole": not a manifest at all
