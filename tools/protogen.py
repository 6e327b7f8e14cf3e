"""Compile the server's OIP gRPC proto into the descriptor it loads (a build-time tool).

    python -m tools.protogen            # write server/kerasop_server/protocol/grpc_predict_v2.pb
    python -m tools.protogen --check    # exit 1 if that file is out of date

The server builds its message classes from this serialized ``FileDescriptorSet`` in a
descriptor pool of its own (protocol/v2_grpc.py), not from generated ``_pb2`` modules:
those register ``inference.*`` in protobuf's default pool, where they clash with any
other OIP client or server in the same process (tritonclient's ``grpc_service.proto``
defines the same names), and they pin the protobuf runtime to the generator's version.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "server"
PROTO = Path("kerasop_server/protocol/grpc_predict_v2.proto")
OUTPUT = PROTO_DIR / PROTO.with_suffix(".pb")


def compile_proto() -> bytes:
    """The serialized FileDescriptorSet of the proto (grpcio-tools' protoc)."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        code = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", str(PROTO)])
        if code != 0:
            raise SystemExit(f"protoc failed on {PROTO} (exit {code})")
        return out.read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check OUTPUT is current")
    args = parser.parse_args(argv)
    compiled = compile_proto()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_bytes() != compiled:
            print(f"{OUTPUT.relative_to(REPO_ROOT)} is out of date: run make protos")
            return 1
        return 0
    OUTPUT.write_bytes(compiled)
    print(f"wrote {OUTPUT.relative_to(REPO_ROOT)} ({len(compiled)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
