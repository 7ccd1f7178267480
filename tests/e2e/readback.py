"""What the docker provider would store after reading a deployed object back, and
the differences a second `pulumi up` would then show.

pulumi-docker 5.2.0 bridges terraform-provider-docker (v4.6.0; v4.5.0 and master
read the same). Its Create ends with Read, and a later `pulumi up` diffs the
program's inputs against what Read stored (the bridge runs the Terraform SDK's
own diff). So each declared input must equal what Read makes of `docker
inspect`, or every `up` updates or replaces the object. This module rebuilds
that state from the real engine, following
internal/provider/resource_docker_container_funcs.go (resourceDockerContainerRead),
resource_docker_network_funcs.go and resource_docker_volume.go, and the
schemas' Optional/Computed/Default rules:

- an attribute Read never sets (volumes, uploads, networks_advanced, envs,
  labels, start, ...) keeps the declared value: never a difference;
- Optional+Computed and not declared: whatever Read found is kept, no difference;
- Optional (not Computed) or with a Default: Read's value must equal the
  declared one, or the Default when nothing is declared;
- some attributes are read only when declared (ports, log_opts, ulimits, pid_mode).

Names are the program's input names (Pulumi's camelCase, lists pluralised).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional


def go_duration(nanoseconds: int) -> str:
    """Go's time.Duration.String(): 0s, 500ms, 30s, 1m0s, 1h30m0s, 1.5s."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    n = abs(nanoseconds)
    if n < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if n >= size:
                return sign + _decimal(n, size) + unit
    hours, rest = divmod(n, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = _decimal(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_go_duration(duration: str) -> int:
    """Go's time.ParseDuration (which the provider uses on durations), in nanoseconds: "30s", "1m0s", "1h30m"."""
    if duration == "0":
        return 0
    parts = _DURATION_PART.findall(duration)
    if not parts or "".join(number + unit for number, unit in parts) != duration:
        raise ValueError(f"{duration!r} is not a Go duration")
    return sum(int(float(number) * _UNIT[unit]) for number, unit in parts)


def _decimal(value: int, unit: int) -> str:
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{str(fraction).rjust(digits, '0').rstrip('0')}"


def _mb(value: int) -> int:
    return value // 1024 // 1024


def _ports(inspect: dict[str, Any]) -> list[dict[str, Any]]:
    # flattenContainerPorts: one entry per host binding, protocol from the "80/tcp" key.
    found = []
    for key, bindings in sorted((inspect["NetworkSettings"].get("Ports") or {}).items()):
        internal, _, protocol = key.partition("/")
        for binding in bindings or []:
            found.append({"internal": int(internal), "external": int(binding["HostPort"]),
                          "ip": binding["HostIp"], "protocol": protocol})
    return found


def _hosts(extra_hosts: Optional[list[str]]) -> list[dict[str, str]]:
    # flattenExtraHosts splits on ":" (an IPv6 address would be cut).
    return [{"host": h.split(":")[0], "ip": h.split(":")[1]} for h in extra_hosts or []]


class Attribute:
    """How one attribute is read back and compared.

    mode: "computed" (Optional+Computed: undeclared means no difference),
    "default" (undeclared compares with `default`), "if_declared" (read only
    when declared).
    """

    def __init__(self, name: str, read: Callable[[dict[str, Any]], Any], mode: str, default: Any = None,
                 normalise: Callable[[Any], Any] = lambda v: v) -> None:
        self.name, self.read, self.mode, self.default, self.normalise = name, read, mode, default, normalise


def _as_set(values: Any) -> Any:
    return sorted(values or [], key=repr)


def _capabilities(value: Any) -> Any:
    return None if not value else {"adds": sorted(value.get("adds") or []), "drops": sorted(value.get("drops") or [])}


def _healthcheck(value: Any) -> Any:
    if not value:
        return None
    # Schema defaults of the block's fields ("0s", 0) apply to what is not declared.
    return {"tests": value.get("tests"), "interval": value.get("interval", "0s"), "timeout": value.get("timeout", "0s"),
            "startPeriod": value.get("startPeriod", "0s"), "startInterval": value.get("startInterval", "0s"),
            "retries": value.get("retries", 0)}


def _ports_normalised(value: Any) -> Any:
    # The ports' DiffSuppress pairs entries by internal port; ip and protocol have defaults.
    return sorted(({"internal": p["internal"], "external": p.get("external"), "ip": p.get("ip") or "0.0.0.0",
                    "protocol": p.get("protocol", "tcp")} for p in value or []), key=lambda p: p["internal"])


def _container_healthcheck(inspect: dict[str, Any]) -> Any:
    health = inspect["Config"].get("Healthcheck")
    if health is None:
        return None
    return {"tests": health.get("Test"), "interval": go_duration(health.get("Interval", 0)),
            "timeout": go_duration(health.get("Timeout", 0)), "startPeriod": go_duration(health.get("StartPeriod", 0)),
            "startInterval": go_duration(health.get("StartInterval", 0)), "retries": health.get("Retries", 0)}


def _capabilities_read(inspect: dict[str, Any]) -> Any:
    host = inspect["HostConfig"]
    if not host.get("CapAdd") and not host.get("CapDrop"):
        return None  # Read leaves the declared value
    return {"adds": host.get("CapAdd") or [], "drops": host.get("CapDrop") or []}


CONTAINER = [
    Attribute("name", lambda i: i["Name"].lstrip("/"), "default"),
    # The program declares image ids (sha256:...): Read then takes the container's .Image.
    Attribute("image", lambda i: i["Image"], "default"),
    Attribute("hostname", lambda i: i["Config"]["Hostname"], "computed"),
    Attribute("domainname", lambda i: i["Config"].get("Domainname") or "", "default", ""),
    Attribute("command", lambda i: i["Config"].get("Cmd"), "computed"),
    Attribute("entrypoints", lambda i: i["Config"].get("Entrypoint"), "computed"),
    # Optional, its DiffSuppress keeps the image's USER when nothing is declared.
    Attribute("user", lambda i: i["Config"].get("User") or "", "computed"),
    Attribute("dns", lambda i: i["HostConfig"].get("Dns"), "default", [], _as_set),
    Attribute("dnsOpts", lambda i: i["HostConfig"].get("DnsOptions"), "default", [], _as_set),
    Attribute("dnsSearches", lambda i: i["HostConfig"].get("DnsSearch"), "default", [], _as_set),
    Attribute("securityOpts", lambda i: i["HostConfig"].get("SecurityOpt"), "computed", None, _as_set),
    Attribute("publishAllPorts", lambda i: bool(i["HostConfig"].get("PublishAllPorts")), "default", False),
    Attribute("restart", lambda i: i["HostConfig"]["RestartPolicy"]["Name"] or "no", "default", "no"),
    Attribute("maxRetryCount", lambda i: i["HostConfig"]["RestartPolicy"].get("MaximumRetryCount", 0), "default", 0),
    Attribute("init", lambda i: bool(i["HostConfig"].get("Init")), "computed"),
    Attribute("capabilities", _capabilities_read, "computed", None, _capabilities),
    Attribute("runtime", lambda i: i["HostConfig"].get("Runtime"), "computed"),
    Attribute("mounts", lambda i: i["HostConfig"].get("Mounts") or [], "default", [], _as_set),
    Attribute("tmpfs", lambda i: i["HostConfig"].get("Tmpfs") or {}, "default", {}),
    Attribute("hosts", lambda i: _hosts(i["HostConfig"].get("ExtraHosts")), "default", [], _as_set),
    Attribute("ulimits", lambda i: [{"name": u["Name"], "soft": u["Soft"], "hard": u["Hard"]}
                                    for u in i["HostConfig"].get("Ulimits") or []], "if_declared", None, _as_set),
    Attribute("privileged", lambda i: bool(i["HostConfig"].get("Privileged")), "default", False),
    Attribute("memory", lambda i: _mb(i["HostConfig"].get("Memory") or 0), "default", 0),
    Attribute("memoryReservation", lambda i: _mb(r) if (r := i["HostConfig"].get("MemoryReservation") or 0) > 0 else r,
              "default", 0),
    Attribute("memorySwap", lambda i: _mb(s) if (s := i["HostConfig"].get("MemorySwap") or 0) > 0 else s, "default", 0),
    Attribute("shmSize", lambda i: _mb(i["HostConfig"].get("ShmSize") or 0), "computed"),
    Attribute("cpuShares", lambda i: i["HostConfig"].get("CpuShares") or 0, "default", 0),
    Attribute("cpuSet", lambda i: i["HostConfig"].get("CpusetCpus") or "", "default", ""),
    Attribute("logDriver", lambda i: i["HostConfig"]["LogConfig"]["Type"], "computed"),
    Attribute("logOpts", lambda i: i["HostConfig"]["LogConfig"].get("Config") or {}, "if_declared"),
    Attribute("storageOpts", lambda i: i["HostConfig"].get("StorageOpt") or {}, "default", {}),
    Attribute("networkMode", lambda i: i["HostConfig"]["NetworkMode"], "default", "bridge"),
    Attribute("usernsMode", lambda i: i["HostConfig"].get("UsernsMode") or "", "default", ""),
    Attribute("healthcheck", _container_healthcheck, "computed", None, _healthcheck),
    Attribute("sysctls", lambda i: i["HostConfig"].get("Sysctls") or {}, "default", {}),
    Attribute("ipcMode", lambda i: i["HostConfig"].get("IpcMode"), "computed"),
    Attribute("groupAdds", lambda i: i["HostConfig"].get("GroupAdd") or [], "default", [], _as_set),
    Attribute("tty", lambda i: bool(i["Config"].get("Tty")), "default", False),
    Attribute("stdinOpen", lambda i: bool(i["Config"].get("OpenStdin")), "default", False),
    Attribute("stopSignal", lambda i: i["Config"].get("StopSignal"), "computed"),
    Attribute("stopTimeout", lambda i: i["Config"].get("StopTimeout"), "computed"),
    Attribute("rm", lambda i: bool(i["HostConfig"].get("AutoRemove")), "default", False),
    Attribute("readOnly", lambda i: bool(i["HostConfig"].get("ReadonlyRootfs")), "default", False),
]


def container_differences(declared: dict[str, Any], inspect: dict[str, Any],
                          ignore: dict[str, str] = {}) -> list[str]:
    """What a second `pulumi up` would change on this container, one line each.

    `ignore`: attributes the test deployment sets on purpose although the
    program does not (name -> why), e.g. the test zone's resolver as `dns`.
    """
    found = []
    state = dict(declared)
    running = bool(inspect["State"].get("Running"))
    must_run = declared.get("mustRun", True)
    for attribute in CONTAINER:
        if attribute.name in ignore:
            continue
        is_declared = attribute.name in declared
        if attribute.mode == "if_declared" and not is_declared:
            continue
        read = attribute.read(inspect)
        if attribute.name == "capabilities" and read is None:
            continue
        state[attribute.name] = read
        if attribute.mode == "computed" and not is_declared:
            continue
        wanted = declared[attribute.name] if is_declared else attribute.default
        if attribute.normalise(read) != attribute.normalise(wanted):
            found.append(f"{attribute.name}: declared {wanted!r}, read back {read!r}")
    # Ports are read only when declared, and only while the container runs (or must).
    if "ports" in declared and (running or must_run):
        read = _ports(inspect)
        if _ports_normalised(read) != _ports_normalised(declared["ports"]):
            found.append(f"ports: declared {declared['ports']!r}, read back {read!r}")
    # A container that should run but does not reads back must_run = false.
    if must_run and not running:
        found.append("mustRun: declared true, read back false (the container is not running)")
    return found


NETWORK = [
    Attribute("name", lambda n: n["Name"], "default"),
    Attribute("labels", lambda n: [{"label": k, "value": v} for k, v in (n.get("Labels") or {}).items()], "default", [],
              _as_set),
    Attribute("driver", lambda n: n["Driver"], "computed"),
    Attribute("options", lambda n: n.get("Options") or {}, "computed"),
    Attribute("internal", lambda n: bool(n.get("Internal")), "computed"),
    Attribute("attachable", lambda n: bool(n.get("Attachable")), "default", False),
    Attribute("ingress", lambda n: bool(n.get("Ingress")), "default", False),
    Attribute("ipv6", lambda n: bool(n.get("EnableIPv6")), "default", False),
    Attribute("ipamDriver", lambda n: n["IPAM"]["Driver"], "default", "default"),
    Attribute("ipamOptions", lambda n: n["IPAM"].get("Options") or {}, "default", {}),
    Attribute("ipamConfigs", lambda n: [{k: v for k, v in (("subnet", c.get("Subnet")), ("ipRange", c.get("IPRange")),
                                                           ("gateway", c.get("Gateway"))) if v}
                                        for c in n["IPAM"].get("Config") or []], "computed", None, _as_set),
]

VOLUME = [
    Attribute("name", lambda v: v["Name"], "computed"),
    Attribute("labels", lambda v: [{"label": k, "value": x} for k, x in (v.get("Labels") or {}).items()], "default", [],
              _as_set),
    Attribute("driver", lambda v: v["Driver"], "computed"),
    Attribute("driverOpts", lambda v: v.get("Options") or {}, "default", {}),
]


def _differences(attributes: list[Attribute], declared: dict[str, Any], inspect: dict[str, Any]) -> list[str]:
    found = []
    for attribute in attributes:
        is_declared = attribute.name in declared
        if attribute.mode == "computed" and not is_declared:
            continue
        read = attribute.read(inspect)
        wanted = declared[attribute.name] if is_declared else attribute.default
        if attribute.normalise(read) != attribute.normalise(wanted):
            found.append(f"{attribute.name}: declared {wanted!r}, read back {read!r}")
    return found


def network_differences(declared: dict[str, Any], inspect: dict[str, Any]) -> list[str]:
    return _differences(NETWORK, declared, inspect)


def volume_differences(declared: dict[str, Any], inspect: dict[str, Any]) -> list[str]:
    return _differences(VOLUME, declared, inspect)
