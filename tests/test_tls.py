"""Mutual TLS: dev PKI generation and who the worker lets in."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pedvit.cloud.worker import SERVICE_NAME, WorkerServer, serve
from pedvit.plans.stage import StageSpec
from pedvit.transport.client import RemoteExecutor
from pedvit.transport.calls import WorkerError
from pedvit.cli.certs import register
from pedvit.transport.tls import ClientTLS, ServerTLS, generate_dev_pki


class NegateStage:
    spec = StageSpec("neg", ("float32",), channels=3, max_side=32)

    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        return -batch


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pedvit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    assert _cli(["certs", "--out", str(out), "--names", "worker1,worker2", "--days", "3"]) == 0
    return out


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("other")
    generate_dev_pki(out)
    return out


@pytest.fixture(scope="module")
def tls_worker(pki: Path) -> Iterator[WorkerServer]:
    tls = ServerTLS(pki / "worker1.pem", pki / "worker1.key", pki / "ca.pem")
    w = serve(0, {"neg": NegateStage()}, tls=tls, token="tok")
    yield w
    w.stop(None)


def test_generated_files(pki: Path, other_pki: Path) -> None:
    names = {p.name for p in pki.iterdir()}
    assert names == {f"{n}.{ext}" for n in ("ca", "worker1", "worker2", "edge") for ext in ("pem", "key")}
    assert {p.name for p in other_pki.iterdir()} == {
        "ca.pem", "ca.key", "worker.pem", "worker.key", "edge.pem", "edge.key"
    }
    for key in pki.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((pki / "worker2.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"worker2", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    life = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=2) < life <= dt.timedelta(days=3)


def test_refuses_to_overwrite_ca(pki: Path) -> None:
    with pytest.raises(FileExistsError):
        _cli(["certs", "--out", str(pki)])


def test_mtls_client_works(pki: Path, tls_worker: WorkerServer) -> None:
    tls = ClientTLS(pki / "ca.pem", pki / "edge.pem", pki / "edge.key")
    batch = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    meta = np.tile(np.array([0, 0, 4, 4], np.int32), (2, 1))
    for host in ("127.0.0.1", "localhost"):
        with RemoteExecutor(f"{host}:{tls_worker.port}", tls=tls, token="tok") as ex:
            assert ex.health(timeout=5)
            np.testing.assert_array_equal(ex.run("neg", batch, meta, out_dtype="float32", timeout=10), -batch)
    # Token and TLS are independent: the right cert with no token is still refused.
    with RemoteExecutor(f"127.0.0.1:{tls_worker.port}", tls=tls) as ex:
        with pytest.raises(WorkerError) as e:
            ex.run("neg", batch, meta, timeout=10)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def _health_over(channel: grpc.Channel) -> grpc.StatusCode | None:
    """Status code of a health check over `channel` (None if it succeeded)."""
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return None


def test_client_without_certificate_is_refused(pki: Path, tls_worker: WorkerServer) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
    with grpc.secure_channel(tls_worker.address, creds) as ch:
        assert _health_over(ch) == grpc.StatusCode.UNAVAILABLE


def test_client_certificate_from_another_ca_is_refused(
    pki: Path, other_pki: Path, tls_worker: WorkerServer
) -> None:
    # Trusts the right CA for the server, but presents a certificate the worker's CA did not sign.
    tls = ClientTLS(pki / "ca.pem", other_pki / "edge.pem", other_pki / "edge.key")
    with RemoteExecutor(tls_worker.address, tls=tls, token="tok") as ex:
        assert not ex.health(timeout=5)
        with pytest.raises(WorkerError) as e:
            ex.info(timeout=5)
        assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_client_not_trusting_the_worker_ca_fails(other_pki: Path, tls_worker: WorkerServer) -> None:
    tls = ClientTLS(other_pki / "ca.pem", other_pki / "edge.pem", other_pki / "edge.key")
    with RemoteExecutor(tls_worker.address, tls=tls) as ex:
        assert not ex.health(timeout=5)


def test_plaintext_client_is_refused(tls_worker: WorkerServer) -> None:
    with grpc.insecure_channel(tls_worker.address) as ch:
        assert _health_over(ch) == grpc.StatusCode.UNAVAILABLE
    with RemoteExecutor(tls_worker.address, token="tok") as ex:
        assert not ex.health(timeout=5)


def test_dev_certificates_have_one_usage_each(pki: Path) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    def usages(name: str) -> list:
        cert = x509.load_pem_x509_certificate((pki / f"{name}.pem").read_bytes())
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    assert usages("edge") == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert usages("worker1") == usages("worker2") == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_worker_certificate_cannot_act_as_edge(pki: Path, tls_worker: WorkerServer) -> None:
    """worker2's certificate (same CA, server usage) does not authenticate it as an edge to worker1."""
    batch = np.ones((1, 8, 8, 3), np.float32)
    meta = np.array([[0, 0, 8, 8]], np.int32)
    as_worker = ClientTLS(pki / "ca.pem", pki / "worker2.pem", pki / "worker2.key")
    with RemoteExecutor(tls_worker.address, tls=as_worker, token="tok") as ex:
        with pytest.raises(WorkerError) as err:
            ex.run("neg", batch, meta)
        # refused in the handshake (BoringSSL checks the usage: "unsupported certificate purpose"), else by
        # the worker's certificate check
        assert err.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED)
    as_edge = ClientTLS(pki / "ca.pem", pki / "edge.pem", pki / "edge.key")
    with RemoteExecutor(tls_worker.address, tls=as_edge, token="tok") as ex:
        np.testing.assert_array_equal(ex.run("neg", batch, meta, out_dtype="float32"), -batch)


def test_pinned_edge_identity(pki: Path, tmp_path: Path) -> None:
    from pedvit.transport.tls import _make_leaf, _write_cert, _write_key  # a second edge of the same CA
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    key, cert = _make_leaf("intruder", ["intruder"], 1, ca_key, ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_cert(tmp_path / "intruder.pem", cert)
    _write_key(tmp_path / "intruder.key", key)
    tls = ServerTLS(pki / "worker1.pem", pki / "worker1.key", pki / "ca.pem", edge_names=("edge",))
    worker = serve(0, {"neg": NegateStage()}, tls=tls)
    try:
        batch, meta = np.ones((1, 8, 8, 3), np.float32), np.array([[0, 0, 8, 8]], np.int32)
        intruder = ClientTLS(pki / "ca.pem", tmp_path / "intruder.pem", tmp_path / "intruder.key")
        with RemoteExecutor(worker.address, tls=intruder) as ex:
            with pytest.raises(WorkerError) as err:
                ex.run("neg", batch, meta)
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and "pinned" in str(err.value)
        with RemoteExecutor(worker.address, tls=ClientTLS(pki / "ca.pem", pki / "edge.pem", pki / "edge.key")) as ex:
            assert ex.run("neg", batch, meta).shape == (1, 8, 8, 3)
    finally:
        worker.stop(None)


def test_certificate_without_client_usage_is_refused_by_the_worker_check() -> None:
    """The application-level check, for PKIs whose certificates state no usage at all."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    from pedvit.transport.tls import ClientCertificateInterceptor, certificate_identity

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = cert.public_bytes(Encoding.PEM)
    assert certificate_identity(pem) == (False, {"edge"})

    class Context:
        def auth_context(self) -> dict:
            return {"x509_pem_cert": [pem]}

    assert "not for TLS client use" in ClientCertificateInterceptor().refusal(Context())


def test_resolve_executors_dials_addresses_with_the_credentials_of_cli_files(pki: Path, tls_worker: WorkerServer,
                                                                              tmp_path: Path) -> None:
    """What `pedvit segment`, `pedvit demo` and `DistributedSamPredictor` do with `--workers` and `--tls-*`/`--token-file`."""
    from pedvit.edge.build import client_credentials, resolve_executors

    token_file = tmp_path / "token"
    token_file.write_text("tok\n")
    batch = np.ones((1, 4, 4, 3), dtype=np.float32)
    meta = np.array([[0, 0, 4, 4]], np.int32)
    tls, token = client_credentials(str(pki / "ca.pem"), str(pki / "edge.pem"), str(pki / "edge.key"), str(token_file))
    (ex,) = resolve_executors([tls_worker.address], tls, token)
    with ex:
        assert ex.name == tls_worker.address
        np.testing.assert_array_equal(ex.run("neg", batch, meta, out_dtype="float32", timeout=10), -batch)
    (plain,) = resolve_executors([tls_worker.address])  # no credentials: the TLS worker refuses
    with plain:
        assert not plain.health(timeout=5)
    with pytest.raises(ValueError, match="go together"):
        client_credentials(str(pki / "ca.pem"), None, str(pki / "edge.key"))


def test_demo_reaches_running_workers_over_tls_with_a_token(pki: Path, tls_worker: WorkerServer, tmp_path: Path) -> None:
    """`pedvit demo --workers ... --tls-ca/--tls-cert/--tls-key --token-file`: the page's executors get through."""
    from pedvit.cli import build_parser
    from pedvit.cli.demo import build_app

    token_file = tmp_path / "token"
    token_file.write_text("tok\n")
    args = build_parser().parse_args([
        "demo", "--workers", tls_worker.address, "--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "edge.pem"),
        "--tls-key", str(pki / "edge.key"), "--token-file", str(token_file)])
    app = build_app(args)
    try:
        (ex,) = app.executors
        batch = np.ones((1, 4, 4, 3), dtype=np.float32)
        np.testing.assert_array_equal(ex.run("neg", batch, np.array([[0, 0, 4, 4]], np.int32), out_dtype="float32"), -batch)
    finally:
        app.close()
    bad = build_parser().parse_args(["demo", "--workers", tls_worker.address, "--tls-ca", str(pki / "ca.pem")])
    with pytest.raises(ValueError, match="go together"):
        build_app(bad)
