"""The layout's one rule, checked: imports only point down the stack.

    kctl, provision  →  controlplane, nodeagent  →  client  →  proto

Every module's imports are read with `ast` (no module is executed), so a wrong
arrow fails here with its file, line and target, before anyone builds on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("proto", "client", "controlplane", "nodeagent", "provision", "kctl", "tests", "bench")

# For each package: the Flotilla packages it may import besides itself.
ALLOWED: dict[str, set[str]] = {
    "proto": set(),
    "client": {"proto"},
    "controlplane": {"proto", "client"},
    "nodeagent": {"proto", "client"},
    "provision": {"proto", "client", "controlplane", "nodeagent"},
    "kctl": {"proto", "client", "controlplane", "nodeagent", "provision"},
    "bench": {"proto", "client", "controlplane", "nodeagent", "provision", "kctl"},
    "tests": set(PACKAGES),
}


def flotilla_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every absolute import of a Flotilla package in `path`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in PACKAGES]
    return found


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "_pb2" not in p.name)


def violations(path: Path, package: str) -> list[str]:
    return [f"{path.name}:{line} imports {target}"
            for line, target in flotilla_imports(path)
            if (top := target.split(".")[0]) != package and top not in ALLOWED[package]]


def test_every_package_is_checked() -> None:
    # A new top-level package must be placed in the stack, not slip past this test.
    tops = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert tops == set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down(package: str) -> None:
    wrong = [v for p in modules() if p.relative_to(ROOT).parts[0] == package for v in violations(p, package)]
    assert not wrong, "imports that run the wrong way:\n" + "\n".join(wrong)


def test_the_checker_sees_a_wrong_arrow(tmp_path: Path) -> None:
    # Guard against a checker that passes because it reads nothing: a client module importing upward.
    probe = tmp_path / "probe.py"
    probe.write_text("from provision import local\nimport kctl.main\nfrom proto import core_pb2\nimport os\n")
    assert violations(probe, "client") == ["probe.py:1 imports provision", "probe.py:2 imports kctl.main"]
    assert violations(probe, "kctl") == []
