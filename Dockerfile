# gcbulk as a long-lived container: `gcbulk run --follow` uploads every case folder under the mounted case tree and
# keeps watching it for new ones. See docker-compose.yml for a demo against the bundled emulator and for the real
# Grand Challenge (profile "real").
FROM python:3.11-slim

# No .pyc writes into the image at run time, and log lines leave the process as they are written.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/gcbulk
# Dependencies first, from the metadata alone, so a source change does not reinstall numpy and SimpleITK.
# Installed against constraints.txt (the lock): the image gets exactly the versions the tests ran with.
COPY pyproject.toml README.md constraints.txt ./
RUN mkdir engine state emulator \
    && touch engine/__init__.py state/__init__.py emulator/__init__.py \
    && pip install -c constraints.txt . \
    && pip uninstall --yes gcbulk \
    && rm -rf engine state emulator
COPY engine ./engine
COPY state ./state
COPY emulator ./emulator
RUN pip install --no-deps -c constraints.txt . && rm -rf build

# A fixed, non-root uid, so files on the volumes have a predictable owner across hosts.
RUN groupadd --system --gid 10001 gcbulk \
    && useradd --system --uid 10001 --gid gcbulk --home-dir /var/lib/gcbulk --shell /usr/sbin/nologin gcbulk \
    && mkdir -p /var/lib/gcbulk /var/lib/gcbulk-emulator /etc/gcbulk /data/cases \
    && chown gcbulk:gcbulk /var/lib/gcbulk /var/lib/gcbulk-emulator /data/cases

# The ledger (the run's memory: resume depends on it) and the JSON event log live on the volume.
ENV GCBULK_LEDGER=/var/lib/gcbulk/job.ledger.sqlite \
    GCBULK_EVENTS=/var/lib/gcbulk/job.events.jsonl \
    GCBULK_METRICS_ADDRESS=0.0.0.0:9464 \
    GCBULK_LOG_FORMAT=json
VOLUME ["/var/lib/gcbulk"]
EXPOSE 9464

USER gcbulk
WORKDIR /var/lib/gcbulk

# Liveness only (/healthz): a Grand Challenge outage must not get the container restarted; /readyz reports that.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "gcbulk.engine.service.healthcheck"]

# SIGTERM (docker stop) drains in-flight parts for GCBULK_DRAIN seconds (default 30): give `docker stop` more time
# than that (docker-compose.yml sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["gcbulk"]
CMD ["run", "--follow", "/etc/gcbulk/job.toml"]
