"""gcapi 0.16.1 as a user drives it, one process per run, so that its CPU and wall time are measured the way
``gcbulk run``'s are (``benchmarks.harness.run_measured``): interpreter start, imports and all.

    python -m benchmarks.gcapi_clients {files|tutorial} LAYOUT.json

``LAYOUT.json``: ``{"base_url", "ca_file", "study", "cases": [[title, [path, …]], …]}``; the token comes from
``$GRAND_CHALLENGE_AUTHORIZATION``, as for gcbulk.

* ``files`` (W1–W3): one ``add_case_to_reader_study`` per case, the case's files on the ``bench-file-N`` sockets.
* ``tutorial`` (R1, R2): the tutorial's loop (``ct-image`` + ``airway-segmentation``), then a poll of each display
  set until both images are in place.

At the end it prints one JSON line, ``{"api_requests": N}``: the requests it sent to the API (its host and path), for
servers whose own counters cannot be read (``compare_gcapi.py --base-url``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import gcapi
import httpx

log = logging.getLogger("benchmarks.gcapi")

TUTORIAL_SOCKETS = ("ct-image", "airway-segmentation")
FILE_SOCKETS = [f"bench-file-{k}" for k in range(10)]
POLL_SECONDS = 0.5
IMPORT_DEADLINE_SECONDS = 3600.0


def add_cases(client: gcapi.Client, study: str, cases: list[tuple[str, list[str]]], sockets: list[str]) -> list[str]:
    return [
        client.add_case_to_reader_study(
            reader_study_slug=study,
            title=title,
            values=[
                gcapi.SocketValueSpec(socket_slug=slug, file=Path(path))
                for path, slug in zip(files, sockets, strict=False)  # a case may use fewer sockets
            ],
        ).pk
        for title, files in cases
    ]


def wait_until_imported(client: gcapi.Client, pks: list[str]) -> None:
    deadline = time.monotonic() + IMPORT_DEADLINE_SECONDS
    for n, pk in enumerate(pks):
        while not _both_images_in_place(client.reader_studies.display_sets.detail(pk=pk)):
            if time.monotonic() > deadline:
                raise SystemExit(f"gcapi: display set {pk} not imported after {IMPORT_DEADLINE_SECONDS:.0f} s")
            log.info("gcapi: waiting for the imports of display set %d of %d", n + 1, len(pks))
            time.sleep(POLL_SECONDS)


def _both_images_in_place(display_set: object) -> bool:
    values = {value.interface.slug: value.image for value in display_set.values}  # type: ignore[attr-defined]
    return all(values.get(slug) is not None for slug in TUTORIAL_SOCKETS)


def main(argv: list[str]) -> int:
    mode, layout_file = argv
    layout = json.loads(Path(layout_file).read_text())
    client = gcapi.Client(
        token=os.environ["GRAND_CHALLENGE_AUTHORIZATION"],
        base_url=layout["base_url"],
        verify=layout["ca_file"] or True,  # no CA file: the system's trust store (a public server)
    )
    api = urlsplit(layout["base_url"])
    # Client() has made its version check already, one GET gcapi/ on its own connection (docs/gc-api.md §5), before
    # a hook could see it: counted here. Request hooks see each request once, above gcapi's retrying transport.
    sent = [1]

    def count(request: httpx.Request) -> None:
        if (request.url.host, request.url.port) == (api.hostname, api.port) and request.url.path.startswith(api.path):
            sent[0] += 1

    client.event_hooks["request"] = [count]
    if mode == "tutorial":
        wait_until_imported(client, add_cases(client, layout["study"], layout["cases"], list(TUTORIAL_SOCKETS)))
    else:
        add_cases(client, layout["study"], layout["cases"], FILE_SOCKETS)
    print(json.dumps({"api_requests": sent[0]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
