# syntax=docker/dockerfile:1
# One image per service, from one file: `--target registry`, `--target dns`, `--target issuer`.
#
# Offline by design: `docker build` needs only this repository and the base image. Every Python
# dependency comes from `build/wheelhouse/`, which `make wheelhouse` fills on the host from
# constraints.txt (the one step that talks to PyPI); pip runs with --no-index here, so
# `docker build --network=none` works and the image holds exactly the pinned versions.
# `make images` does both steps. See deploy/README.md ("Images").
#
# Stages: `tools` (protoc, setuptools), `protos` (generated gRPC code, as `make protos`),
# `build-<svc>` (a virtualenv with the service installed, not editable), and the final
# `<svc>` stage: the slim base image, the virtualenv, a non-root user. No compiler, no
# grpcio-tools, no setuptools and no pip in the final images.
#
# The build stages start from the full image of the same Python (BUILD_IMAGE), which carries gcc
# and the Python headers: the dns service compiles its C accelerator there, offline, with no
# system package to fetch. Both official images keep Python in /usr/local, so a venv built on one
# runs on the other.

ARG PYTHON_IMAGE=python:3.11-slim
ARG BUILD_IMAGE=python:3.11

FROM ${BUILD_IMAGE} AS tools
ENV PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/src/build/wheelhouse \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY build/wheelhouse/ build/wheelhouse/
COPY constraints.txt ./
RUN python -m venv /opt/tools \
    && /opt/tools/bin/pip install -q -c constraints.txt grpcio-tools setuptools

FROM tools AS protos
COPY protos/ protos/
COPY gen/python/pyproject.toml gen/python/
# The same command as `make protos`, without the mypy stubs (type checking is not run here).
RUN /opt/tools/bin/python -m grpc_tools.protoc -I protos \
        --python_out=gen/python --grpc_python_out=gen/python \
        $(find protos -name '*.proto') \
    && touch gen/python/acmezone/py.typed

FROM protos AS sources
COPY services/common/ services/common/
COPY services/registry/ services/registry/
COPY services/dns/ services/dns/
COPY services/issuer/ services/issuer/
COPY services/clients/ services/clients/
COPY docker/healthcheck.py docker/healthcheck.py

# Each service gets its own virtualenv, without pip: the tools venv's pip installs into it.
FROM sources AS build-registry
RUN python -m venv --without-pip /opt/venv \
    && /opt/tools/bin/pip --python /opt/venv/bin/python install -q -c constraints.txt \
        ./gen/python ./services/common ./services/registry

# The accelerator is an optional extension (a pip install without a compiler still works);
# here a missing one fails the build instead of shipping the slower Python UDP loop.
FROM sources AS build-dns
RUN python -m venv --without-pip /opt/venv \
    && /opt/tools/bin/pip --python /opt/venv/bin/python install -q -c constraints.txt \
        ./gen/python ./services/common ./services/dns \
    && /opt/venv/bin/python -c "import acmezone_dns._native_batch"

# The issuer image carries the `acmezone` CLI (acmezone-clients) too, so operators can
# `docker compose exec issuer acmezone ...`.
FROM sources AS build-issuer
RUN python -m venv --without-pip /opt/venv \
    && /opt/tools/bin/pip --python /opt/venv/bin/python install -q -c constraints.txt \
        ./gen/python ./services/common ./services/issuer ./services/clients

# What every final image shares: the slim base, no packaging tools, a fixed non-root user
# (uid/gid 10001, matching runAsUser in deploy/k8s), JSON logs, listening on all interfaces.
FROM ${PYTHON_IMAGE} AS runtime
RUN python -m pip uninstall -q -y pip setuptools wheel \
    && groupadd --system --gid 10001 acmezone \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/acmezone \
        --no-create-home --shell /usr/sbin/nologin acmezone \
    && mkdir -p /var/lib/acmezone \
    && chown 10001:10001 /var/lib/acmezone
COPY --from=sources /src/docker/healthcheck.py /usr/local/bin/acmezone-healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/acmezone
USER 10001:10001

FROM runtime AS registry
COPY --from=build-registry /opt/venv /opt/venv
ENV ACMEZONE_REGISTRY_GRPC_ADDRESS=0.0.0.0:50051 \
    ACMEZONE_REGISTRY_HTTP_ADDRESS=0.0.0.0:8053 \
    ACMEZONE_REGISTRY_METRICS_ADDRESS=0.0.0.0:9101 \
    ACMEZONE_REGISTRY_DATA_DIR=/var/lib/acmezone/registry \
    ACMEZONE_REGISTRY_LOG_FORMAT=json
EXPOSE 50051 8053 9101
# Docker and compose use this; Kubernetes ignores it and runs its native grpc probes instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "/usr/local/bin/acmezone-healthcheck", "127.0.0.1:50051"]
ENTRYPOINT ["acmezone-registry"]
CMD ["serve"]

FROM runtime AS dns
COPY --from=build-dns /opt/venv /opt/venv
# DNS on 5353 inside the container: no NET_BIND_SERVICE needed; the Service or the published
# port maps 53 to it.
ENV ACMEZONE_DNS_GRPC_ADDRESS=0.0.0.0:50052 \
    ACMEZONE_DNS_METRICS_ADDRESS=0.0.0.0:9102 \
    ACMEZONE_DNS_DNS_ADDRESSES=0.0.0.0:5353 \
    ACMEZONE_DNS_LOG_FORMAT=json
EXPOSE 5353/udp 5353/tcp 50052 9102
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/acmezone-healthcheck", "127.0.0.1:50052"]
ENTRYPOINT ["acmezone-dns"]

FROM runtime AS issuer
COPY --from=build-issuer /opt/venv /opt/venv
ENV ACMEZONE_ISSUER_GRPC_ADDRESS=0.0.0.0:50053 \
    ACMEZONE_ISSUER_HTTP01_ADDRESS=0.0.0.0:5002 \
    ACMEZONE_ISSUER_METRICS_ADDRESS=0.0.0.0:9103 \
    ACMEZONE_ISSUER_DATA_DIR=/var/lib/acmezone/issuer \
    ACMEZONE_ISSUER_LOG_FORMAT=json
EXPOSE 50053 5002 9103
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "/usr/local/bin/acmezone-healthcheck", "127.0.0.1:50053"]
ENTRYPOINT ["acmezone-issuer"]
