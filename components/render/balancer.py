"""haproxy.cfg of the balancer in front of the Roundcube replicas (deployment: swarm).

HAProxy resolves the Roundcube service's name through Docker's embedded DNS
(127.0.0.11): with endpoint mode dnsrr it answers one address per running
replica. Each replica is checked every 2 s on Roundcube's login page; a
request that fails to connect is sent again to another replica
(`retries`, `option redispatch`), so a replica going away mid-session costs
the user nothing: the session is in PostgreSQL.

The access log holds the path without the query string: on the OAuth
callback the query carries the authorization code.
"""

from __future__ import annotations

from components.render import layout

# Most Roundcube replicas the balancer keeps addresses for.
MAX_REPLICAS = 20
# Where the balancer answers its own healthcheck, whatever the replicas do.
HEALTH_URI = "/-/balancer-health"


def render_balancer_cfg() -> str:
    lines = [
        "# Rendered by roundcube-authentik (components/render/balancer.py). Do not edit.",
        "global",
        "    log stdout format raw local0",
        "    maxconn 2000",
        "",
        "defaults",
        "    mode http",
        "    log global",
        # %HP: the path only, never the query (the OAuth code).
        '    log-format "%ci [%tr] %b/%s %ST %B %Tt %HM %HP"',
        "    option forwardfor",
        "    option redispatch",
        "    retries 3",
        "    timeout connect 1s",  # the private network: a replica that is gone fails fast
        "    timeout client 60s",
        "    timeout server 60s",
        "",
        "resolvers docker",
        "    nameserver embedded 127.0.0.11:53",
        "    resolve_retries 3",
        "    timeout resolve 1s",
        "    timeout retry 1s",
        "    hold valid 2s",
        "    hold obsolete 2s",
        "",
        "frontend webmail",
        f"    bind :{layout.HTTP_PORT}",
        f"    monitor-uri {HEALTH_URI}",
        "    default_backend roundcube",
        "",
        "backend roundcube",
        "    balance roundrobin",
        "    option httpchk GET /",
        "    http-check expect status 200",
        f"    server-template replica {MAX_REPLICAS} {layout.ROUNDCUBE_HOST}:{layout.HTTP_PORT} "
        "check inter 2s fall 2 rise 1 resolvers docker init-addr none",
    ]
    return "\n".join(lines) + "\n"
