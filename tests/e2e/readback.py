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
from typing import Any, Callable, Mapping, Optional


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


def _differences(attributes: list[Attribute], declared: dict[str, Any], inspect: dict[str, Any],
                 ignore: Mapping[str, str] = {}) -> list[str]:
    found = []
    for attribute in attributes:
        if attribute.name in ignore:
            continue
        is_declared = attribute.name in declared
        if attribute.mode == "computed" and not is_declared:
            continue
        read = attribute.read(inspect)
        wanted = declared[attribute.name] if is_declared else attribute.default
        if attribute.normalise(read) != attribute.normalise(wanted):
            found.append(f"{attribute.name}: declared {wanted!r}, read back {read!r}")
    return found


def network_differences(declared: dict[str, Any], inspect: dict[str, Any], ignore: Mapping[str, str] = {}) -> list[str]:
    return _differences(NETWORK, declared, inspect, ignore)


def volume_differences(declared: dict[str, Any], inspect: dict[str, Any]) -> list[str]:
    return _differences(VOLUME, declared, inspect)


# -- Swarm: docker_service, docker_secret, docker_config --------------------------
#
# resource_docker_service_funcs.go (resourceDockerServiceReadRefreshFunc) and the
# flatteners in resource_docker_service_structures.go, with the schema of
# resource_docker_service.go. Service durations are read with shortDur, not
# Go's plain String(): 60s reads "1m", 1h reads "1h".


def short_duration(nanoseconds: int) -> str:
    """The provider's shortDur: Go's Duration.String() without a trailing "0s" after minutes, "0m" after hours."""
    text = go_duration(nanoseconds)
    if text.endswith("m0s"):
        text = text[:-2]
    if text.endswith("h0m"):
        text = text[:-2]
    return text


def _label_set(labels: Optional[dict[str, str]]) -> list[dict[str, str]]:
    return [{"label": k, "value": v} for k, v in (labels or {}).items()]


def _service_mount(mount: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {"target": mount.get("Target", ""), "source": mount.get("Source", ""),
                             "type": mount.get("Type", ""), "readOnly": bool(mount.get("ReadOnly"))}
    if mount.get("BindOptions") is not None:
        bind = mount["BindOptions"]
        found["bindOptions"] = {"propagation": bind["Propagation"]} if bind.get("Propagation") else {}
    if mount.get("VolumeOptions") is not None:
        volume = mount["VolumeOptions"]
        found["volumeOptions"] = {"noCopy": bool(volume.get("NoCopy")), "labels": _label_set(volume.get("Labels"))}
        driver = volume.get("DriverConfig")
        if driver is not None:
            if driver.get("Name"):
                found["volumeOptions"]["driverName"] = driver["Name"]
            found["volumeOptions"]["driverOptions"] = driver.get("Options") or {}
    if mount.get("TmpfsOptions") is not None:
        tmpfs = mount["TmpfsOptions"]
        # int(v.TmpfsOptions.Mode.Perm()): the permission bits only, a sticky bit (0o1000) is not read.
        found["tmpfsOptions"] = {"sizeBytes": tmpfs.get("SizeBytes", 0), "mode": tmpfs.get("Mode", 0) & 0o777}
    return found


def _file_reference(reference: dict[str, Any], kind: str) -> dict[str, Any]:
    # flattenServiceSecrets / flattenServiceConfigs
    found: dict[str, Any] = {f"{kind}Id": reference[f"{kind.capitalize()}ID"]}
    if reference.get(f"{kind.capitalize()}Name"):
        found[f"{kind}Name"] = reference[f"{kind.capitalize()}Name"]
    target = reference.get("File")
    if target is not None:
        found["fileName"] = target.get("Name", "")
        if target.get("UID"):
            found["fileUid"] = target["UID"]
        if target.get("GID"):
            found["fileGid"] = target["GID"]
        found["fileMode"] = target.get("Mode", 0)
    return found


def _container_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """flattenContainerSpec: most fields only when non-empty (the JSON leaves empty ones out)."""
    found: dict[str, Any] = {}
    for key, name in (("Image", "image"), ("Command", "commands"), ("Args", "args"), ("Hostname", "hostname"),
                      ("User", "user"), ("Dir", "dir"), ("Groups", "groups"), ("StopSignal", "stopSignal"),
                      ("Isolation", "isolation"), ("Sysctls", "sysctl"), ("CapabilityAdd", "capAdds"),
                      ("CapabilityDrop", "capDrops")):
        if spec.get(key):
            found[name] = spec[key]
    if spec.get("Labels"):
        found["labels"] = _label_set(spec["Labels"])
    if spec.get("Env"):
        found["env"] = dict(e.partition("=")[::2] for e in spec["Env"] if e)
    if spec.get("Privileges") is not None:
        found["privileges"] = spec["Privileges"]
    if spec.get("ReadOnly"):
        found["readOnly"] = True
    if spec.get("Mounts"):
        found["mounts"] = [_service_mount(m) for m in spec["Mounts"]]
    if spec.get("StopGracePeriod") is not None:
        found["stopGracePeriod"] = short_duration(spec["StopGracePeriod"])
    health = spec.get("Healthcheck")
    if health is not None:
        found["healthcheck"] = {
            **({"tests": health["Test"]} if health.get("Test") else {}),
            "interval": short_duration(health.get("Interval", 0)), "timeout": short_duration(health.get("Timeout", 0)),
            "startPeriod": short_duration(health.get("StartPeriod", 0)), "retries": health.get("Retries", 0),
        }
    if spec.get("Hosts"):
        # "ip host", split on the space
        found["hosts"] = [{"ip": h.split(" ")[0], "host": h.split(" ")[1]} for h in spec["Hosts"]]
    dns = spec.get("DNSConfig")
    if dns is not None:
        found["dnsConfig"] = {name: dns[key] for key, name in
                              (("Nameservers", "nameservers"), ("Search", "searches"), ("Options", "options"))
                              if dns.get(key)}
    if spec.get("Secrets"):
        found["secrets"] = [_file_reference(s, "secret") for s in spec["Secrets"]]
    if spec.get("Configs"):
        found["configs"] = [_file_reference(c, "config") for c in spec["Configs"]]
    if spec.get("Init") is not None:
        found["init"] = spec["Init"]
    return found


def _task_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """flattenTaskSpec."""
    found: dict[str, Any] = {}
    if spec.get("ContainerSpec") is not None:
        found["containerSpec"] = _container_spec(spec["ContainerSpec"])
    resources = spec.get("Resources")
    if resources is not None:
        limits, reservation = resources.get("Limits"), resources.get("Reservations")
        found["resources"] = {
            "limits": None if limits is None else {"nanoCpus": limits.get("NanoCPUs", 0),
                                                   "memoryBytes": limits.get("MemoryBytes", 0)},
            "reservation": None if reservation is None else {
                "nanoCpus": reservation.get("NanoCPUs", 0), "memoryBytes": reservation.get("MemoryBytes", 0),
                "genericResources": reservation.get("GenericResources") or None},
        }
    policy = spec.get("RestartPolicy")
    if policy is not None:
        found["restartPolicy"] = {
            **({"condition": policy["Condition"]} if policy.get("Condition") else {}),
            **({"delay": short_duration(policy["Delay"])} if "Delay" in policy else {}),
            **({"maxAttempts": policy["MaxAttempts"]} if "MaxAttempts" in policy else {}),
            **({"window": short_duration(policy["Window"])} if "Window" in policy else {}),
        }
    placement = spec.get("Placement")
    if placement is not None:
        found["placement"] = {
            **({"constraints": placement["Constraints"]} if placement.get("Constraints") else {}),
            **({"prefs": [p["Spread"]["SpreadDescriptor"] for p in placement["Preferences"]]}
               if placement.get("Preferences") else {}),
            **({"platforms": [{"architecture": p.get("Architecture", ""), "os": p.get("OS", "")}
                              for p in placement["Platforms"]]} if placement.get("Platforms") else {}),
            "maxReplicas": placement.get("MaxReplicas", 0),
        }
    found["forceUpdate"] = spec.get("ForceUpdate", 0)
    if spec.get("Runtime"):
        found["runtime"] = spec["Runtime"]
    if spec.get("Networks"):
        found["networksAdvanceds"] = [
            {"id": n["Target"], "driverOpts": [f"{k}={v}" for k, v in (n.get("DriverOpts") or {}).items()],
             **({"aliases": n["Aliases"]} if n.get("Aliases") else {})}
            for n in spec["Networks"]
        ]
    driver = spec.get("LogDriver")
    if driver is not None:
        found["logDriver"] = {"name": driver.get("Name", ""), **({"options": driver["Options"]} if driver.get("Options") else {})}
    return found


def _update_config(config: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """flattenServiceUpdateOrRollbackConfig; the ratio printed with one decimal, from a float32."""
    if config is None:
        return None
    return {"parallelism": config.get("Parallelism", 0), "delay": short_duration(config.get("Delay", 0)),
            "failureAction": config.get("FailureAction", ""), "monitor": short_duration(config.get("Monitor", 0)),
            "maxFailureRatio": f"{config.get('MaxFailureRatio', 0):.1f}", "order": config.get("Order", "")}


def _endpoint(mode: str, ports: Optional[list[dict[str, Any]]]) -> dict[str, Any]:
    return {"mode": mode, "ports": [{"name": p.get("Name", ""), "protocol": p.get("Protocol", ""),
                                     "targetPort": p.get("TargetPort", 0), "publishedPort": p.get("PublishedPort", 0),
                                     "publishMode": p.get("PublishMode", "")} for p in ports or []]}


def service_state(inspect: dict[str, Any]) -> dict[str, Any]:
    """What Read stores for a service (`docker service inspect`), in the program's input names."""
    spec = inspect["Spec"]
    mode = spec.get("Mode") or {}
    replicated = mode.get("Replicated")
    state: dict[str, Any] = {
        "name": spec["Name"],
        "labels": _label_set(spec.get("Labels")),
        "taskSpec": _task_spec(spec.get("TaskTemplate") or {}),
        "mode": {**({"replicated": {"replicas": replicated["Replicas"]} if "Replicas" in replicated else {}}
                    if replicated is not None else {}),
                 "global": mode.get("Global") is not None},
        "updateConfig": _update_config(spec.get("UpdateConfig")),
        "rollbackConfig": _update_config(spec.get("RollbackConfig")),
    }
    # From the runtime endpoint once the swarm set it, else from the spec.
    runtime = inspect.get("Endpoint") or {}
    if (runtime.get("Spec") or {}).get("Mode"):
        state["endpointSpec"] = _endpoint(runtime["Spec"]["Mode"], runtime.get("Ports"))
    else:
        declared = spec.get("EndpointSpec") or {}
        state["endpointSpec"] = _endpoint(declared.get("Mode", ""), declared.get("Ports"))
    return state


class Field:
    """One attribute of the service schema and how SDKv2 diffs it.

    kind: "value", "list" (ordered), "set" (of values), "map", "block" (MaxItems 1),
    "blocks" (a set of blocks) or "block_list" (a list of blocks). `default`:
    what an undeclared Optional attribute is compared as (its zero, or the
    schema's Default). `computed`: Optional+Computed, so an undeclared one keeps
    whatever Read stored. `equal`: a DiffSuppressFunc's idea of equal values.
    """

    def __init__(self, kind: str = "value", default: Any = None, computed: bool = False,
                 fields: Optional[dict[str, "Field"]] = None, canonical: Callable[[Any], Any] = lambda v: v) -> None:
        self.kind, self.default, self.computed = kind, default, computed
        self.fields = fields or {}
        self.canonical = canonical


def _value(default: Any = None, computed: bool = False, canonical: Callable[[Any], Any] = lambda v: v) -> Field:
    return Field("value", default, computed, canonical=canonical)


def _block(fields: dict[str, Field], computed: bool = False) -> Field:
    return Field("block", None, computed, fields)


_FILE_REFERENCE = {"fileName": _value(), "fileUid": _value("0"), "fileGid": _value("0"), "fileMode": _value(0o444)}
_UPDATE_CONFIG = {
    "parallelism": _value(1), "delay": _value("0s"), "failureAction": _value("pause"), "monitor": _value("5s"),
    # suppressEquivalentFloatRatio: compared as numbers
    "maxFailureRatio": _value("0.0", canonical=lambda v: float(v)), "order": _value("stop-first"),
}
SERVICE = _block({
    "name": _value(),
    "labels": Field("set", computed=True),
    "taskSpec": _block({
        "containerSpec": _block({
            "image": _value(), "labels": Field("set"), "commands": Field("list"), "args": Field("list"),
            "hostname": _value(""), "env": Field("map"), "dir": _value(""), "user": _value(""),
            "groups": Field("list"), "privileges": _value(), "readOnly": _value(False),
            "mounts": Field("blocks", fields={
                "target": _value(), "source": _value(""), "type": _value(), "readOnly": _value(False),
                "bindOptions": _block({"propagation": _value("rprivate")}),
                "volumeOptions": _block({"noCopy": _value(False), "labels": Field("set"), "driverName": _value(""),
                                         "driverOptions": Field("map")}),
                "tmpfsOptions": _block({"sizeBytes": _value(0), "mode": _value(0)}),
            }),
            "stopSignal": _value(""), "stopGracePeriod": _value(computed=True),
            "healthcheck": _block({"tests": Field("list"), "interval": _value("0s"), "timeout": _value("0s"),
                                   "startPeriod": _value("0s"), "retries": _value(0)}, computed=True),
            "hosts": Field("blocks", fields={"host": _value(), "ip": _value()}),
            "dnsConfig": _block({"nameservers": Field("list"), "searches": Field("list"), "options": Field("list")},
                                computed=True),
            "secrets": Field("blocks", fields={"secretId": _value(), "secretName": _value(""), **_FILE_REFERENCE}),
            "configs": Field("blocks", fields={"configId": _value(), "configName": _value(""), **_FILE_REFERENCE}),
            "isolation": _value("default"), "sysctl": Field("map"),
            "capAdds": Field("list"), "capDrops": Field("list"), "init": _value(computed=True),
        }),
        "resources": _block({
            "limits": _block({"nanoCpus": _value(0), "memoryBytes": _value(0)}),
            "reservation": _block({"nanoCpus": _value(0), "memoryBytes": _value(0), "genericResources": _value()}),
        }, computed=True),
        "restartPolicy": _block({"condition": _value(""), "delay": _value(""), "maxAttempts": _value(0),
                                 "window": _value("")}, computed=True),
        "placement": _block({"constraints": Field("set"), "prefs": Field("set"), "maxReplicas": _value(0),
                             "platforms": Field("blocks", fields={"architecture": _value(), "os": _value()})},
                            computed=True),
        "forceUpdate": _value(computed=True), "runtime": _value(computed=True),
        # The deprecated `name` is not read: declaring it would differ from the "" stored.
        "networksAdvanceds": Field("blocks", fields={"id": _value(""), "name": _value(""), "aliases": Field("set"),
                                                     "driverOpts": Field("set")}),
        "logDriver": _block({"name": _value(), "options": Field("map")}),
    }),
    "mode": _block({"replicated": _block({"replicas": _value(1)}, computed=True), "global": _value(False)},
                   computed=True),
    "updateConfig": _block(_UPDATE_CONFIG),
    "rollbackConfig": _block(_UPDATE_CONFIG),
    "endpointSpec": _block({
        "mode": _value(computed=True),
        "ports": Field("block_list", fields={"name": _value(""), "protocol": _value("tcp"), "targetPort": _value(),
                                             "publishedPort": _value(computed=True), "publishMode": _value("ingress")}),
    }, computed=True),
})


def _canonical(schema: Field, value: Any, drop: frozenset[str] = frozenset()) -> Any:
    """A value in a form where equal means "no diff": defaults filled in, sets sorted."""
    if schema.kind == "value":
        return schema.canonical(schema.default if value is None else value)
    if schema.kind == "list":
        return list(value or [])
    if schema.kind == "set":
        return sorted(value or [], key=repr)
    if schema.kind == "map":
        return dict(value or {})
    if schema.kind == "block":
        if not value:
            return None
        return {name: _canonical(field, value.get(name)) for name, field in schema.fields.items()
                if not (field.computed and name not in value) and name not in drop}
    elements = [_canonical(Field("block", fields=schema.fields), e, drop) for e in value or []]
    return sorted(elements, key=repr) if schema.kind == "blocks" else elements


def _compare(path: str, schema: Field, declared: Any, is_declared: bool, read: Any, ignore: Mapping[str, str],
             found: list[str]) -> None:
    if path in ignore or (not is_declared and schema.computed):
        return
    if schema.kind == "block" and declared and read:
        for name, field in schema.fields.items():
            _compare(f"{path}.{name}", field, declared.get(name), name in declared, read.get(name), ignore, found)
        return
    drop: frozenset[str] = frozenset()
    if schema.kind in ("blocks", "block_list"):
        # A computed field no element declares keeps what was read (e.g. a port's allocated published_port).
        drop = frozenset(name for name, field in schema.fields.items()
                         if field.computed and not any(name in e for e in declared or []))
    wanted, stored = _canonical(schema, declared, drop), _canonical(schema, read, drop)
    if wanted == stored:
        return
    if schema.kind == "blocks":
        # Only the elements that differ, in their compared form.
        found.append(f"{path}: declared {[e for e in wanted if e not in stored]!r}, "
                     f"read back {[e for e in stored if e not in wanted]!r}")
    else:
        found.append(f"{path}: declared {declared!r}, read back {read!r}")


def service_differences(declared: dict[str, Any], inspect: dict[str, Any], ignore: Mapping[str, str] = {}) -> list[str]:
    """What a second `pulumi up` would change on this service, one line each.

    `ignore`: dotted attribute paths (e.g. "taskSpec.containerSpec.dnsConfig")
    the test deployment sets on purpose although the program does not (path -> why).
    """
    found: list[str] = []
    state = service_state(inspect)
    for name, field in SERVICE.fields.items():
        _compare(name, field, declared.get(name), name in declared, state.get(name), ignore, found)
    return found


def secret_differences(declared: dict[str, Any], inspect: dict[str, Any]) -> list[str]:
    # Read sets only the name: "secret data is not exposed via the API"; data and labels stand as declared.
    name = inspect["Spec"]["Name"]
    return [] if name == declared["name"] else [f"name: declared {declared['name']!r}, read back {name!r}"]


def config_differences(declared: dict[str, Any], inspect: dict[str, Any]) -> list[str]:
    """Read sets name, data (padded standard base64 of the content, as the API's JSON carries it) and labels."""
    spec = inspect["Spec"]
    found = []
    if spec["Name"] != declared["name"]:
        found.append(f"name: declared {declared['name']!r}, read back {spec['Name']!r}")
    if "dataRaw" in declared:
        raise ValueError("data_raw is not modelled: the program declares data")
    if spec.get("Data", "") != declared.get("data"):
        found.append("data: the content read back differs from the declared base64 (a replacement on every up)")
    if sorted(_label_set(spec.get("Labels")), key=repr) != sorted(declared.get("labels") or [], key=repr):
        found.append(f"labels: declared {declared.get('labels')!r}, read back {spec.get('Labels')!r}")
    return found
