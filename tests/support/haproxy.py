"""The predictors' load balancer config (docker/haproxy/haproxy.cfg) as the tests run it with Debian's haproxy.

The repository's file finds the predictors through Docker's DNS (`server-template ... resolvers docker`); a test
has fixed addresses instead, so each `server-template` becomes one `server` line per address with the same
options minus the DNS ones. Everything else (checks, retries, redispatch, which requests may be retried) is the
file as it ships.
"""

from __future__ import annotations

import re
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "docker" / "haproxy" / "haproxy.cfg"
TEMPLATE = re.compile(r"^(\s*)server-template \S+ \S+ \S+(.*)$", re.M)


def config_for(servers: list[str]) -> str:
    """The shipped config with the DNS-discovered slots replaced by ``servers`` ("address:port" each)."""
    text = CONFIG.read_text()
    assert len(TEMPLATE.findall(text)) == 2, "both backends discover the predictors with a server-template"

    def lines(match: re.Match[str]) -> str:
        indent, options = match[1], match[2]
        options = re.sub(r"\s(resolvers \S+|init-addr \S+|resolve-prefer \S+)", "", options)
        return "\n".join(f"{indent}server p{i} {server}{options}" for i, server in enumerate(servers, 1))

    return TEMPLATE.sub(lines, text)


def env_for(bind: str, slots: int) -> dict[str, str]:
    """The variables the config reads; the DNS ones are unused once the templates are replaced."""
    return {"LB_BIND": bind, "PREDICTOR_SLOTS": str(slots), "PREDICTOR_ADDRESS": "unused:8000",
            "DNS_RESOLVER": "127.0.0.1:53"}
