# Gantry as a DICOM node:
#   docker run --init -v /etc/gantry:/etc/gantry:ro -v gantry-state:/var/lib/gantry \
#     -p 11112:11112 gantry
# with /etc/gantry/gantry.yaml (state_dir: /var/lib/gantry, network.host: 0.0.0.0,
# network.port: 11112) and the site key and recipient certificates it names. The node runs as
# uid 10001 and refuses a site key anyone else may read, so the key file (`gantry keys init`
# makes it 0600, owned by whoever ran it) must belong to uid 10001:
#   sudo chown 10001 /etc/gantry/site.key
# or run the container as the key's owner (the state volume must then be writable by it):
#   docker run --user "$(stat -c %u /etc/gantry/site.key)" ...
# Stop with `docker stop -t 60`: SIGTERM lets receives in flight finish; the rest stays
# queued. Reload the configuration with `docker kill -s HUP CONTAINER`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/gantry
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY gantry ./gantry
COPY config ./config
# Tesseract's English model for OCR of burned-in text (the OCR extra's wheel brings the engine;
# a configuration with redaction rules or `on_risk: ocr` needs both).
RUN apt-get update && apt-get install -y --no-install-recommends tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir '.[ocr]' && useradd --system --uid 10001 gantry \
    && mkdir -p /var/lib/gantry && chown gantry /var/lib/gantry
USER gantry
VOLUME ["/var/lib/gantry"]
EXPOSE 11112 9112
# Ready when the receiver listens, the database takes a write and the disk has room; needs
# `metrics: {host: 0.0.0.0, port: 9112}` (0.0.0.0 to scrape /metrics from outside too).
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["python", "-m", "gateway.metrics", "http://127.0.0.1:9112/healthz"]
ENTRYPOINT ["gantry"]
CMD ["serve", "--config", "/etc/gantry/gantry.yaml"]
