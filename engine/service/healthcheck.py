"""``python -m gcbulk.engine.service.healthcheck``: the container's HEALTHCHECK. Exit 0 when ``/healthz`` answers 200, else 1.

It asks the address the run serves on (``$GCBULK_METRICS_ADDRESS``, as ``engine/settings.py`` reads it), on loopback
when the run listens on every interface. The slim image has no curl, hence Python's urllib; this module imports
nothing else, so a probe every few seconds stays cheap.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_ADDRESS = (
    "127.0.0.1:9464"  # gcbulk.engine.settings.DEFAULT_METRICS_ADDRESS (not imported: that pulls in the engine)
)
_ANY = {"", "0.0.0.0", "::", "[::]", "*"}


def healthz_url(address: str) -> str | None:
    address = address.strip()
    if address.lower() in ("", "off", "none", "false", "0"):
        return None
    host, _, port = address.rpartition(":")
    host = "127.0.0.1" if host in _ANY else host
    host = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    return f"http://{host}:{port}/healthz"


def main() -> int:
    url = healthz_url(os.environ.get("GCBULK_METRICS_ADDRESS", DEFAULT_ADDRESS))
    if url is None:
        print("healthcheck: GCBULK_METRICS_ADDRESS is off, nothing to probe", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
