# Gantry as a DICOM node:
#   docker run --init -v /etc/gantry:/etc/gantry:ro -v gantry-state:/var/lib/gantry \
#     -p 11112:11112 gantry
# with /etc/gantry/gantry.yaml (state_dir: /var/lib/gantry, network.host: 0.0.0.0,
# network.port: 11112) and the site key and recipient certificates it names. Stop with
# `docker stop -t 60`: SIGTERM lets receives in flight finish; the rest stays queued.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/gantry
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY config ./config
RUN pip install --no-cache-dir . && useradd --system --uid 10001 gantry \
    && mkdir -p /var/lib/gantry && chown gantry /var/lib/gantry
USER gantry
VOLUME ["/var/lib/gantry"]
EXPOSE 11112
ENTRYPOINT ["gantry"]
CMD ["serve", "--config", "/etc/gantry/gantry.yaml"]
