# gcbulk as a long-lived container: `gcbulk run --follow` uploads every case folder under the mounted case tree and
# keeps watching it for new ones. See docker-compose.yml for a demo against the bundled emulator and for the real
# Grand Challenge (profile "real").
#
# Targets: `gcbulk` (the default, last stage): the base install plus the PostgreSQL driver, no emulator, no compiler,
# no test extra. `emulator`: the same plus gcbulk[emulator], for the compose demo's Grand Challenge stand-in
# (docker build --target emulator -t gcbulk-emulator .). Podman drops HEALTHCHECK unless built with --format docker.

# ---- build: dependencies first (a cached layer), then gcbulk's wheel; nothing of this stage's source tree or build
# state (build/, *.egg-info) reaches the runtime images, which copy only the finished virtual environment.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The dependency lists from pyproject.toml's metadata alone, so a source change does not reinstall numpy and
# SimpleITK; installed against constraints.txt (the lock): the image gets exactly the versions the tests ran with.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
open('base.txt', 'w').write('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres'])); \
open('emulator.txt', 'w').write('\n'.join(p['optional-dependencies']['emulator']))" \
    && python -m venv /opt/gcbulk \
    && /opt/gcbulk/bin/pip install -c constraints.txt -r base.txt
COPY README.md ./
COPY gcbulk ./gcbulk
COPY engine ./engine
COPY state ./state
COPY emulator ./emulator
RUN /opt/gcbulk/bin/pip wheel -c constraints.txt --no-deps --wheel-dir /wheels . \
    && /opt/gcbulk/bin/pip install -c constraints.txt --no-deps --no-index /wheels/gcbulk-*.whl

# The emulator's libraries (panimg with its codecs, cryptography, nh3, aiofiles) only in the emulator's image.
FROM build AS build-emulator
RUN /opt/gcbulk/bin/pip install -c constraints.txt -r emulator.txt

# ---- what both runtime images share: Python, a non-root user, the directories the volumes mount on.
FROM python:3.11-slim AS runtime

# No .pyc writes into the image at run time, and log lines leave the process as they are written.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/gcbulk/bin:$PATH

# A fixed, non-root uid, so files on the volumes have a predictable owner across hosts.
RUN groupadd --system --gid 10001 gcbulk \
    && useradd --system --uid 10001 --gid gcbulk --home-dir /var/lib/gcbulk --shell /usr/sbin/nologin gcbulk \
    && mkdir -p /var/lib/gcbulk /var/lib/gcbulk-emulator /etc/gcbulk /data/cases \
    && chown gcbulk:gcbulk /var/lib/gcbulk /var/lib/gcbulk-emulator /data/cases

# ---- the emulator (a second target; compose builds it for its `emulator` service, whose healthcheck it defines).
FROM runtime AS emulator
COPY --from=build-emulator /opt/gcbulk /opt/gcbulk
VOLUME ["/var/lib/gcbulk-emulator"]
EXPOSE 8443 8444
USER gcbulk
WORKDIR /var/lib/gcbulk-emulator
ENTRYPOINT ["gcbulk-emulator"]

# ---- gcbulk itself: the default target.
FROM runtime AS gcbulk
COPY --from=build /opt/gcbulk /opt/gcbulk

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
# One-shot uses of this image (compose's case generators, `docker run … gcbulk plan`) disable it.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "gcbulk.engine.service.healthcheck"]

# SIGTERM (docker stop) drains in-flight parts for GCBULK_DRAIN seconds (default 30): give `docker stop` more time
# than that (docker-compose.yml sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["gcbulk"]
CMD ["run", "--follow", "/etc/gcbulk/job.toml"]
