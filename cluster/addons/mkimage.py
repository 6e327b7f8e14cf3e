#!/usr/bin/env python3
"""Write a single-layer container image as a docker-archive tar (the `docker save` format),
with no Docker: a deterministic layer tar, an image config, and manifest.json.

    mkimage.py OUT.tar NAME:TAG --entrypoint /pause --add SRC:DEST[:MODE] ... [--env K=V ...]
              [--user UID[:GID]] [--workdir DIR] [--port 53/udp ...] [--volume DIR ...]

`ctr -n k8s.io images import OUT.tar` (and `docker load`) accept the result. Directories above
each DEST are created in the layer. Every entry has mtime 0 and owner 0:0, so the same inputs
give the same image digest. A ``--volume`` directory is the exception: empty and owned by
``--user``, so a fresh named volume mounted there (docker copies the owner) is writable by a
non-root user.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile


def build_layer(
    adds: list[tuple[str, str, int | None]],
    volumes: tuple[str, ...] = (),
    owner: tuple[int, int] = (0, 0),
) -> bytes:
    buf = io.BytesIO()
    seen_dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add_dir(path: str) -> None:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d and d not in seen_dirs:
                    seen_dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(ti)

        # /tmp (sticky, world-writable) and /etc, /dev, /proc, /sys are mount points or
        # expected by runtimes; create them so the rootfs looks like a normal one.
        for d in ("dev", "proc", "sys", "etc", "var/run"):
            add_dir(d)
        ti = tarfile.TarInfo("tmp")
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o1777, 0
        tar.addfile(ti)
        seen_dirs.add("tmp")
        for volume in volumes:
            add_dir(os.path.dirname(volume.strip("/")))
            ti = tarfile.TarInfo(volume.strip("/"))
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
            ti.uid, ti.gid = owner
            tar.addfile(ti)
            seen_dirs.add(volume.strip("/"))
        for src, dest, mode in sorted(adds, key=lambda a: a[1]):
            dest = dest.strip("/")
            add_dir(os.path.dirname(dest))
            with open(src, "rb") as f:
                data = f.read()
            ti = tarfile.TarInfo(dest)
            ti.size, ti.mtime = len(data), 0
            ti.mode = mode if mode is not None else (os.stat(src).st_mode & 0o7777)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("out")
    ap.add_argument("ref", help="repository:tag, e.g. kerasop/pause:local")
    ap.add_argument("--add", action="append", default=[], metavar="SRC:DEST[:MODE]")
    ap.add_argument("--entrypoint", action="append", default=[])
    ap.add_argument("--cmd", action="append", default=[])
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--user", default="")
    ap.add_argument("--workdir", default="/")
    ap.add_argument("--port", action="append", default=[])
    ap.add_argument("--volume", action="append", default=[], help="an empty dir owned by --user")
    args = ap.parse_args()

    adds = []
    for spec in args.add:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            ap.error(f"bad --add {spec!r}")
        adds.append((parts[0], parts[1], int(parts[2], 8) if len(parts) == 3 else None))

    uid, _, gid = args.user.partition(":")
    owner = (int(uid or 0), int(gid or uid or 0))
    layer = build_layer(adds, tuple(args.volume), owner)
    layer_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *args.env],
            "Entrypoint": args.entrypoint or None,
            "Cmd": args.cmd or None,
            "WorkingDir": args.workdir,
            "User": args.user,
            "ExposedPorts": {p if "/" in p else p + "/tcp": {} for p in args.port} or None,
            "Labels": {
                "org.opencontainers.image.source": "keras-operator cluster/addons/mkimage.py"
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "cluster/addons/mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [
        {"Config": f"{config_id}.json", "RepoTags": [args.ref], "Layers": [f"{layer_id}/layer.tar"]}
    ]
    repositories = {args.ref.rsplit(":", 1)[0]: {args.ref.rsplit(":", 1)[1]: config_id}}

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:

        def put(name: str, data: bytes, mode: int = 0o644) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, 0
            out.addfile(ti, io.BytesIO(data))

        d = tarfile.TarInfo(layer_id)
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 0
        out.addfile(d)
        put(f"{layer_id}/VERSION", b"1.0")
        put(f"{layer_id}/json", json.dumps({"id": layer_id}).encode())
        put(f"{layer_id}/layer.tar", layer)
        put(f"{config_id}.json", config_bytes)
        put("manifest.json", json.dumps(manifest).encode())
        put("repositories", json.dumps(repositories).encode())
    os.replace(tmp, args.out)
    print(f"{args.out}: {args.ref} sha256:{config_id} ({len(layer)} byte layer)")


if __name__ == "__main__":
    main()
