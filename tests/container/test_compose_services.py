"""docker-compose.yml's services can run side by side: no two bind one host port, and a one-shot service does not
inherit the gcbulk image's HEALTHCHECK (it would be probed, and reported unhealthy, while it has nothing to serve)."""

from __future__ import annotations

from collections import Counter

from tests.container.conftest import compose

# Services that run once and exit (docker compose waits for service_completed_successfully on them).
ONE_SHOT = {"demo-cases", "scale-out-cases"}


def host_binding(mapping: str) -> tuple[str, str]:
    """(host address, host port) of a "[ADDRESS:]HOST_PORT:CONTAINER_PORT" mapping, defaults of ${VAR:-default}
    resolved."""
    resolved = mapping
    while "${" in resolved:
        start = resolved.index("${")
        end = resolved.index("}", start)
        resolved = resolved[:start] + resolved[start + 2 : end].split(":-", 1)[1] + resolved[end + 1 :]
    *host, _container = resolved.split(":")
    return (host[0], host[1]) if len(host) == 2 else ("0.0.0.0", host[0])


def test_no_two_services_bind_one_host_port() -> None:
    bindings = [
        (name, host_binding(str(mapping)))
        for name, service in compose()["services"].items()
        for mapping in service.get("ports", [])
    ]
    taken = Counter(port for _, (_, port) in bindings)
    assert bindings and all(count == 1 for count in taken.values()), bindings
    assert all(address == "127.0.0.1" for _, (address, _) in bindings), "a host port open beyond this machine"


def test_one_shot_services_disable_the_images_healthcheck() -> None:
    services = compose()["services"]
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no"
        assert services[name]["healthcheck"] == {"disable": True}, name
    waited_for = {
        dependency
        for service in services.values()
        for dependency, condition in (service.get("depends_on") or {}).items()
        if condition == {"condition": "service_completed_successfully"}
    }
    assert waited_for == ONE_SHOT
