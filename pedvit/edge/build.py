"""Building a split deployment from what a caller names, the one way the CLI, the web demo and
`DistributedSamPredictor` do it.

    tls, token = client_credentials(ca, cert, key, token_file)            # CLI file options -> credentials
    executors = resolve_executors(["10.0.0.5:50051", "10.0.1.7:50051"], tls, token)
    executors = resolve_executors(".pedvit/cluster.json")                 # a cluster file brings its own
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from pedvit.transport.auth import read_token_file
from pedvit.transport.client import RemoteExecutor
from pedvit.transport.tls import ClientTLS

from .cluster import load_cluster

#: What names a set of workers: executors ("host:port" strings become `RemoteExecutor`s, anything else is
#: used as it is), or the path of a cluster file (`pedvit.edge.cluster`).
WorkerSpec = Sequence[Any] | str | os.PathLike[str]


def resolve_executors(spec: WorkerSpec, tls: ClientTLS | None = None, token: str | None = None) -> list[Any]:
    """One executor per worker of `spec`.

    "host:port" strings are dialed with `tls` and `token` and named by their address; a cluster file carries
    its own TLS and token (its workers are named as in the file), so `tls` and `token` do not apply to it.
    """
    if isinstance(spec, (str, os.PathLike)):
        return load_cluster(spec).executors()
    return [RemoteExecutor(w, tls=tls, token=token, name=w) if isinstance(w, str) else w for w in spec]


def client_credentials(tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None,
                       token_file: str | None = None) -> tuple[ClientTLS | None, str | None]:
    """The edge's (TLS, bearer token) from file paths: mutual TLS needs all three TLS files or none.

    Raises:
        ValueError: only some of the TLS files were given.
        FileNotFoundError: the token file is missing.
    """
    files = (tls_ca, tls_cert, tls_key)
    if any(files) and not all(files):
        raise ValueError("--tls-ca, --tls-cert and --tls-key go together")
    tls = ClientTLS(*files) if all(files) else None
    return tls, read_token_file(token_file) if token_file else None
