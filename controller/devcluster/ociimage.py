"""A one-layer OCI image archive from a few files, for ``ctr images import``.

The node needs a pod sandbox image ("pause") and no registry is reachable to pull one, so it is
made here from the ``pause`` binary that hack/build-node.sh builds: one static executable, one
layer, no base image.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def _blob(data: bytes) -> tuple[str, int]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def _add(tar: tarfile.TarFile, name: str, data: bytes, *, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def write_archive(
    *,
    ref: str,
    files: Mapping[str, Path],
    entrypoint: Sequence[str],
    out: Path,
) -> None:
    """An OCI image layout archive at ``out``: ``files`` (path in image -> file on disk),
    executable, in one uncompressed layer; the image is named ``ref``."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer_tar:
        for name, source in sorted(files.items()):
            _add(layer_tar, name.lstrip("/"), source.read_bytes(), mode=0o755)
    layer = layer_buf.getvalue()
    layer_digest, layer_size = _blob(layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": list(entrypoint), "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        sort_keys=True,
    ).encode()
    config_digest, config_size = _blob(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        },
        sort_keys=True,
    ).encode()
    manifest_digest, manifest_size = _blob(manifest)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref,
                    },
                }
            ],
        }
    ).encode()
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for digest, data in (
            (config_digest, config),
            (layer_digest, layer),
            (manifest_digest, manifest),
        ):
            _add(tar, "blobs/sha256/" + digest.removeprefix("sha256:"), data)
        _add(tar, "index.json", index)
    tmp.replace(out)
