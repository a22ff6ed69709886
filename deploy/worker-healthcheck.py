"""Container health check for a pedvit worker: exit 0 if the gRPC health service answers SERVING.

Uses mutual TLS when PEDVIT_TLS_CA, PEDVIT_TLS_CERT and PEDVIT_TLS_KEY are set (a client certificate the
worker accepts, e.g. a dedicated "probe" certificate from the same CA); plaintext otherwise. Health checks
need no bearer token (the worker exempts them).
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

address = os.environ.get("PEDVIT_HEALTH_ADDRESS", "127.0.0.1:50051")
ca, cert, key = (os.environ.get(f"PEDVIT_TLS_{k}") for k in ("CA", "CERT", "KEY"))
if ca and cert and key:
    def read(p: str) -> bytes:
        with open(p, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    options = [("grpc.ssl_target_name_override", os.environ.get("PEDVIT_TLS_SERVER_NAME", "localhost"))]
    channel = grpc.secure_channel(address, credentials, options=options)
else:
    channel = grpc.insecure_channel(address)
try:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="pedvit.v1.WindowWorker"), timeout=3.0
    )
except grpc.RpcError as error:
    print(f"unhealthy: {error.code().name}", file=sys.stderr)
    sys.exit(1)
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
