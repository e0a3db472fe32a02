"""Compile proto/*.proto into Python modules beside them (grpcio-tools + mypy-protobuf).

Run `python -m proto.build` after editing a .proto; `python -m proto.build --check`
fails if the committed modules are stale, which the test script runs in CI.

It also writes proto/api_descriptors.binpb: the API's descriptors *with their source
comments*, which generated modules do not carry. The apiserver's OpenAPI documents
(controlplane/apiserver/openapi/) take their field and kind descriptions from it, as
Kubernetes takes them from its Go doc comments, so `kubectl explain` tells what a .proto says.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
API_DESCRIPTORS = "api_descriptors.binpb"
# Not the Kubernetes API: the runtime's and kubelet's services, the gRPC service, the options.
NOT_API = {"cri", "kubelet", "apiserver", "options"}


def api_sources() -> list[str]:
    """The .proto files of the Kubernetes API (meta, core, apps, ...), as protoc names them."""
    return sorted(str(p.relative_to(ROOT)) for p in PROTO_DIR.glob("*.proto") if p.stem not in NOT_API)


def compile_to(out: Path) -> None:
    """Generate every module of proto/ under `out` (which mirrors the repo root)."""
    sources = sorted(str(p.relative_to(ROOT)) for p in PROTO_DIR.glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins live beside python
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # A second run for the API alone: its imports (options, Timestamp) are not described
    # again, as the modules already carry them.
    descriptors = out / "proto" / API_DESCRIPTORS
    descriptors.parent.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--descriptor_set_out={descriptors}", "--include_source_info",
            *api_sources()]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (descriptor set)")


def generated_names(folder: Path) -> set[str]:
    suffixes = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi", API_DESCRIPTORS)
    return {p.name for p in folder.iterdir() if p.name.endswith(suffixes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        compile_to(Path(tmp))
        fresh = Path(tmp) / "proto"
        names = generated_names(fresh)
        if opts.check:
            stale = sorted(
                n for n in names | generated_names(PROTO_DIR)
                if not (PROTO_DIR / n).exists() or not (fresh / n).exists()
                or not filecmp.cmp(fresh / n, PROTO_DIR / n, shallow=False)
            )
            if stale:
                print("generated protobuf code is stale; run `python -m proto.build`:", *stale, file=sys.stderr)
                return 1
            return 0
        for old in generated_names(PROTO_DIR) - names:
            (PROTO_DIR / old).unlink()
        for n in names:
            shutil.copyfile(fresh / n, PROTO_DIR / n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
