"""Mutual TLS for edge <-> worker channels, and a development PKI generator.

`generate_dev_pki` writes a throw-away CA plus worker and edge certificates (EC P-256, SAN for
localhost/127.0.0.1/::1 and the given names). A worker certificate carries only the server usage, the edge's
only the client usage. Workers serve with `ServerTLS` and *require* a client certificate signed by the CA, so
plaintext clients and clients with certificates from any other CA are refused during the handshake; then
`ClientCertificateInterceptor` refuses (PERMISSION_DENIED) a certificate without the client usage, such as
another worker's, and, when `ServerTLS.edge_names` pins them, any other identity than the edge's. The edge
connects with `ClientTLS`.

For production use certificates from your own PKI; the generated CA key is only as safe as the directory
it was written to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .auth import HEALTH_PREFIX, guarded_handler

_LOCAL_DNS = ("localhost",)
_LOCAL_IPS = ("127.0.0.1", "::1")


def _read(path: str | os.PathLike[str]) -> bytes:
    return Path(path).read_bytes()


@dataclass(frozen=True)
class ServerTLS:
    """Worker-side TLS material (PEM file paths). Client certificates are always required, and must carry the
    client usage; `edge_names` (common names or DNS SANs) pins which identities may call (empty: any edge
    certificate of the CA)."""

    cert: str | os.PathLike[str]
    key: str | os.PathLike[str]
    client_ca: str | os.PathLike[str]
    edge_names: tuple[str, ...] = ()

    def interceptor(self) -> ClientCertificateInterceptor:
        """The check of each caller's certificate that goes with these credentials."""
        return ClientCertificateInterceptor(self.edge_names)

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials that require and verify a client certificate signed by `client_ca`."""
        return grpc.ssl_server_credentials(
            [(_read(self.key), _read(self.cert))],
            root_certificates=_read(self.client_ca),
            require_client_auth=True,
        )


@dataclass(frozen=True)
class ClientTLS:
    """Edge-side TLS material (PEM file paths).

    Attributes:
        ca: CA that signed the worker certificates.
        cert, key: the edge's client certificate and key.
        server_name: override the host name checked against the worker certificate's SAN (useful when
            dialing an IP that is not in the certificate); None checks the dialed host.
    """

    ca: str | os.PathLike[str]
    cert: str | os.PathLike[str]
    key: str | os.PathLike[str]
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials presenting the edge certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca),
            private_key=_read(self.key),
            certificate_chain=_read(self.cert),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        """Extra channel options (the target-name override, if any)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def certificate_identity(pem: bytes) -> tuple[bool, set[str]]:
    """(whether the certificate may act as a TLS client, its common names and DNS SANs)."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client = ExtendedKeyUsageOID.CLIENT_AUTH in usages
    except x509.ExtensionNotFound:
        client = False  # a certificate that states no usage is not taken for an edge
    names = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if isinstance(a.value, str)}
    try:
        names |= set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return client, names


class ClientCertificateInterceptor(grpc.ServerInterceptor):
    """Refuses (PERMISSION_DENIED) every call but health checks whose TLS client certificate lacks the client
    usage (a worker's certificate, say) or, with `edge_names`, names none of them."""

    def __init__(self, edge_names: Sequence[str] = ()) -> None:
        self.edge_names = frozenset(edge_names)

    def refusal(self, context: grpc.ServicerContext) -> str | None:
        """Why this caller may not call, or None."""
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            return "a client certificate is required"
        client, names = certificate_identity(pems[0])
        if not client:
            return "the client certificate is not for TLS client use (an edge certificate is required)"
        if self.edge_names and not names & self.edge_names:
            return f"client certificate {sorted(names)} is not a pinned edge identity"
        return None

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        return guarded_handler(handler, self.refusal, grpc.StatusCode.PERMISSION_DENIED)


# --------------------------------------------------------------------------------------------------
# Development PKI


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a private key readable by the owner only (created 0600, never world-readable)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if path.exists():
        path.unlink()  # os.open's mode only applies on creation
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pedvit dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    # Backdate a little so freshly generated certs work across small clock skews.
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def _make_ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    not_before, not_after = _validity(days)
    name = _name("pedvit dev CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    common_name: str,
    dns_names: Sequence[str],
    days: int,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    usage: x509.ObjectIdentifier,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    not_before, not_after = _validity(days)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([*dns_names, *_LOCAL_DNS])]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _LOCAL_IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # One usage each: a worker's certificate cannot authenticate it as an edge to the other workers.
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def generate_dev_pki(
    out_dir: str | os.PathLike[str],
    names: Sequence[str] = (),
    *,
    days: int = 365,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write a development CA and certificates into `out_dir`.

    Files: ca.pem, ca.key, edge.pem, edge.key (client usage only), and worker.pem/worker.key when `names`
    is empty, otherwise <name>.pem/<name>.key per worker name (server usage only; each name is also a DNS
    SAN of its certificate).
    Private keys are created with mode 0600.

    Returns:
        Mapping of logical name ("ca", "edge", "worker" or each name) + ".pem"/".key" -> path.

    Raises:
        FileExistsError: if ca.key already exists and `overwrite` is False.
        ValueError: on a bad `days` or a name that would clash with ca/edge.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    worker_names = list(names) or ["worker"]
    for n in worker_names:
        if n in ("ca", "edge") or not n or "/" in n or n.startswith("."):
            raise ValueError(f"invalid worker name {n!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "ca.key").exists() and not overwrite:
        raise FileExistsError(f"{out / 'ca.key'} exists; refusing to overwrite a CA (use overwrite/--force)")

    paths: dict[str, Path] = {}

    def save(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        paths[f"{stem}.pem"] = out / f"{stem}.pem"
        paths[f"{stem}.key"] = out / f"{stem}.key"
        _write_cert(paths[f"{stem}.pem"], cert)
        _write_key(paths[f"{stem}.key"], key)

    ca_key, ca_cert = _make_ca(days)
    save("ca", ca_key, ca_cert)
    for n in worker_names:
        save(n, *_make_leaf(n, [n], days, ca_key, ca_cert, ExtendedKeyUsageOID.SERVER_AUTH))
    save("edge", *_make_leaf("edge", ["edge"], days, ca_key, ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH))
    return paths
