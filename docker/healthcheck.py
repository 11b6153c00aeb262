"""Container HEALTHCHECK: exit 0 when the gRPC health service at the given address says SERVING.

Used by Docker and docker compose (`depends_on: condition: service_healthy`). Kubernetes does not
run it: the manifests under deploy/k8s use the kubelet's native `grpc:` probes instead.

    python /usr/local/bin/acmezone-healthcheck 127.0.0.1:50051 [service-name]
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    """Check once; print the status so `docker inspect` shows why a container is unhealthy."""
    if len(argv) not in (2, 3):
        print("usage: acmezone-healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    service = argv[2] if len(argv) == 3 else ""
    with grpc.insecure_channel(argv[1]) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
