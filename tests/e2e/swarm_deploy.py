"""Creates on a real Docker engine in Swarm mode exactly the Docker resources a
capture of a swarm stack declares.

The swarm counterpart of tests/e2e/deploy.py: no Pulumi engine runs here, so
this plays the docker provider's part for `deployment: swarm`. The overlay
network, the volumes, the Docker secrets and configs (the declared base64
`data`, under the declared Docker names) and the services come from the
program's declarations (offline.capture). Each service's declared inputs are
turned into the Engine API's service spec as the provider's create does
(terraform-provider-docker, resource_docker_service_structures.go
createServiceSpec): what the provider always sends is sent, durations parsed
as Go parses them, the capture's ids of networks, secrets, configs and images
replaced by the real ones. An input this module does not know makes it fail
rather than deploy something other than what the program asked for.

After create the provider reads every service back, and a later `pulumi up`
diffs the declarations against that state: so once every service runs, each
is read back (tests/e2e/readback.py service_state) and any difference fails
the deployment. What the test sets although the program does not is listed
in TEST_ONLY_INPUTS with its reason, and skipped there.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

import docker
from docker.models.containers import Container

from offline.capture import Capture, DeclaredResource
from tests.e2e import readback
from tests.e2e.deploy import ReadBackDifference, UnsupportedDeclaration

NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
SECRET = "docker:index/secret:Secret"
CONFIG = "docker:index/serviceConfig:ServiceConfig"
SERVICE = "docker:index/service:Service"
# Docker resources a swarm stack may declare; any other (a container) is refused.
DOCKER_TYPES = {NETWORK, VOLUME, SECRET, CONFIG, SERVICE, "docker:index/image:Image"}

# The inputs this deployer applies, block by block; anything else is refused.
NETWORK_INPUTS = {"name", "driver"}
VOLUME_INPUTS = {"name"}
FILE_INPUTS = {"name", "data"}
SERVICE_INPUTS = {"name", "taskSpec", "mode", "endpointSpec", "updateConfig", "rollbackConfig"}
TASK_SPEC_INPUTS = {"containerSpec", "resources", "restartPolicy", "placement", "networksAdvanceds", "logDriver"}
CONTAINER_SPEC_INPUTS = {
    "image", "commands", "args", "hostname", "user", "readOnly", "capAdds", "capDrops", "mounts", "configs",
    "secrets", "healthcheck", "stopGracePeriod", "hosts",
}
MOUNT_INPUTS = {"target", "source", "type", "readOnly", "tmpfsOptions"}
TMPFS_INPUTS = {"sizeBytes", "mode"}
SECRET_REFERENCE_INPUTS = {"secretId", "secretName", "fileName", "fileUid", "fileGid", "fileMode"}
CONFIG_REFERENCE_INPUTS = {"configId", "configName", "fileName", "fileUid", "fileGid", "fileMode"}
HEALTHCHECK_INPUTS = {"tests", "interval", "timeout", "startPeriod", "retries"}
HOST_INPUTS = {"host", "ip"}
RESOURCES_INPUTS = {"limits"}
LIMITS_INPUTS = {"memoryBytes", "nanoCpus"}
RESTART_INPUTS = {"condition", "delay", "maxAttempts", "window"}
PLACEMENT_INPUTS = {"constraints"}
NETWORK_ATTACHMENT_INPUTS = {"id", "aliases"}
LOG_DRIVER_INPUTS = {"name", "options"}
MODE_INPUTS = {"replicated"}
REPLICATED_INPUTS = {"replicas"}
ENDPOINT_INPUTS = {"mode", "ports"}
PORT_INPUTS = {"name", "protocol", "targetPort", "publishedPort", "publishMode"}
UPDATE_INPUTS = {"parallelism", "delay", "failureAction", "monitor", "maxFailureRatio", "order"}

# What the test deployment sets although the program does not, and why; the
# read-back comparison skips exactly these (attribute paths).
TEST_ONLY_INPUTS = {
    "taskSpec.containerSpec.dnsConfig": "the test's own DNS zone is every task's only resolver beyond the swarm's "
    "names, so no lookup leaves the test network",
}
TEST_ONLY_NETWORK_INPUTS = {
    "attachable": "the test's own containers (the authentik stand-in, the DNS zone, the receiving SMTP server) "
    "join the overlay network as standalone containers, which only an attachable overlay allows",
}
# A task that failed this often is not going to come up: stop waiting and report.
FAILED_TASKS_LIMIT = 3


@dataclass
class SwarmDeployment:
    client: docker.DockerClient
    images: dict[str, str]                                             # declared repoDigest -> real image id
    networks: list[Any] = field(default_factory=list)
    volumes: list[Any] = field(default_factory=list)
    secrets: dict[str, Any] = field(default_factory=dict)              # by resource name
    configs: dict[str, Any] = field(default_factory=dict)              # by resource name
    services: dict[str, Any] = field(default_factory=dict)             # by resource name
    real_ids: dict[str, str] = field(default_factory=dict)             # an id under the mocks -> the engine's
    # Containers of the test's own (its DNS zone, its receiving SMTP server, the stand-in).
    test_services: list[Container] = field(default_factory=list)
    dns: Optional[list[str]] = None

    def service(self, service: str) -> Any:
        found = [s for name, s in self.services.items() if name.endswith(f"-{service}")]
        assert len(found) == 1, f"no single service for {service}: {list(self.services)}"
        found[0].reload()
        return found[0]

    def running_tasks(self, service: str) -> list[dict[str, Any]]:
        """The service's tasks that run now (for a service with a healthcheck: that passed it)."""
        tasks = self.service(service).tasks(filters={"desired-state": "running"})
        return [t for t in tasks if t["Status"]["State"] == "running"]

    def containers(self, service: str) -> list[Container]:
        """The running containers of the service's tasks."""
        found = []
        for task in self.running_tasks(service):
            try:
                found.append(self.client.containers.get(task["Status"]["ContainerStatus"]["ContainerID"]))
            except docker.errors.NotFound:  # the task just ended
                pass
        return found

    def container(self, service: str) -> Container:
        """The container of a service that runs one task."""
        found = self.containers(service)
        assert len(found) == 1, f"{service}: expected one running task, found {len(found)}"
        return found[0]

    def logs(self, service: str) -> str:
        """Every task's log of the service (`docker service logs`), those of ended tasks too."""
        chunks = self.client.api.service_logs(self.service(service).id, stdout=True, stderr=True)
        return b"".join(chunks).decode(errors="replace")

    def remove(self) -> None:
        """Removes everything this deployment created: services first, then what they used.

        Every removal is tried, whatever failed before it; the first failure is raised at the end.
        """
        failures: list[BaseException] = []

        def attempt(action: Callable[[], Any]) -> None:
            try:
                action()
            except docker.errors.NotFound:
                pass
            except Exception as err:
                failures.append(err)

        for service in self.services.values():
            attempt(service.remove)
        # Their tasks' containers go asynchronously; they hold the network, volumes, secrets and ports.
        names = {s.name for s in self.services.values()}
        attempt(lambda: _wait(lambda: not task_containers(self.client, names),
                              "the removed services' task containers to go", timeout=90))
        for container in self.test_services:
            attempt(lambda: container.remove(force=True, v=True))
        for item in [*self.secrets.values(), *self.configs.values(), *self.volumes]:
            attempt(item.remove)
        for network in self.networks:
            # The swarm lets go of a removed task's endpoint a moment after its container.
            attempt(lambda: _wait(lambda: _remove_network(network), f"network {network.name} to be removed", timeout=30))
        if failures:
            raise failures[0]


def _remove_network(network: Any) -> bool:
    try:
        network.remove()
    except docker.errors.NotFound:
        pass
    return True


def task_containers(client: docker.DockerClient, services: set[str]) -> list[str]:
    return [c.name for c in client.containers.list(all=True, ignore_removed=True)
            if c.labels.get("com.docker.swarm.service.name") in services]


def _wait(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except docker.errors.APIError as err:  # e.g. a network still in use
            last = err
        time.sleep(1)
    raise TimeoutError(f"{what}: not done after {timeout}s (last error: {last})")


def _only(where: str, value: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(value) - known
    if unknown:
        raise UnsupportedDeclaration(f"{where}: inputs the swarm e2e deployer does not apply: {sorted(unknown)}")


def _nanoseconds(where: str, duration: str) -> int:
    # The provider parses with time.ParseDuration ("" -> 0, as its ignored error leaves it).
    if duration == "":
        return 0
    try:
        return readback.parse_go_duration(duration)
    except ValueError as err:
        raise UnsupportedDeclaration(f"{where}: {err}") from None


def _real(deployment: SwarmDeployment, where: str, declared_id: str) -> str:
    try:
        return deployment.real_ids[declared_id]
    except KeyError:
        raise UnsupportedDeclaration(f"{where}: {declared_id!r} is not the id of a declared resource") from None


def _mount(name: str, mount: dict[str, Any]) -> dict[str, Any]:
    _only(f"{name} mount {mount.get('target')}", mount, MOUNT_INPUTS)
    created: dict[str, Any] = {"Type": mount["type"], "Target": mount["target"], "Source": mount.get("source", ""),
                               "ReadOnly": bool(mount.get("readOnly", False))}
    if "tmpfsOptions" in mount:
        tmpfs = mount["tmpfsOptions"]
        _only(f"{name} tmpfs {mount['target']}", tmpfs, TMPFS_INPUTS)
        # os.FileMode(mode): sent as the number declared.
        created["TmpfsOptions"] = {"SizeBytes": tmpfs.get("sizeBytes", 0), "Mode": tmpfs.get("mode", 0)}
    return created


def _file_reference(deployment: SwarmDeployment, name: str, reference: dict[str, Any], kind: str) -> dict[str, Any]:
    _only(f"{name} {kind} {reference.get('fileName')}", reference,
          SECRET_REFERENCE_INPUTS if kind == "secret" else CONFIG_REFERENCE_INPUTS)
    key = kind.capitalize()
    created = {
        f"{key}ID": _real(deployment, name, reference[f"{kind}Id"]),
        # The schema's defaults: uid and gid "0", mode 0o444.
        "File": {"Name": reference["fileName"], "UID": reference.get("fileUid", "0"),
                 "GID": reference.get("fileGid", "0"), "Mode": reference.get("fileMode", 0o444)},
    }
    if f"{kind}Name" in reference:
        created[f"{key}Name"] = reference[f"{kind}Name"]
    return created


def _update_config(name: str, config: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if config is None:
        return None
    _only(name, config, UPDATE_INPUTS)
    # createUpdateOrRollbackConfig, with the schema's defaults for what is not declared.
    return {"Parallelism": config.get("parallelism", 1), "Delay": _nanoseconds(name, config.get("delay", "0s")),
            "FailureAction": config.get("failureAction", "pause"),
            "Monitor": _nanoseconds(name, config.get("monitor", "5s")),
            "MaxFailureRatio": float(config.get("maxFailureRatio", "0.0")),
            "Order": config.get("order", "stop-first")}


def service_spec(deployment: SwarmDeployment, declared: DeclaredResource) -> dict[str, Any]:
    """The Engine API's service spec the provider's create sends for this declaration (create_service's arguments)."""
    name = declared.name
    inputs = declared.inputs
    _only(name, inputs, SERVICE_INPUTS)
    task = inputs["taskSpec"]
    _only(f"{name} taskSpec", task, TASK_SPEC_INPUTS)
    spec = task["containerSpec"]
    _only(f"{name} containerSpec", spec, CONTAINER_SPEC_INPUTS)

    hosts = []
    for host in spec.get("hosts", []):
        _only(f"{name} hosts", host, HOST_INPUTS)
        if host["ip"] == "host-gateway":
            # That would send the tasks' traffic to the Docker host; the tests talk only to loopback and their own.
            raise UnsupportedDeclaration(f"{name}: host-gateway mappings are not deployed by the tests")
        hosts.append(f"{host['ip']} {host['host']}")
    health = spec.get("healthcheck")
    healthcheck: dict[str, Any] = {}  # always sent: the nested block exists even when empty
    if health is not None:
        _only(f"{name} healthcheck", health, HEALTHCHECK_INPUTS)
        healthcheck = {"Test": health.get("tests"), "Interval": _nanoseconds(name, health.get("interval", "0s")),
                       "Timeout": _nanoseconds(name, health.get("timeout", "0s")),
                       "StartPeriod": _nanoseconds(name, health.get("startPeriod", "0s")),
                       "Retries": health.get("retries", 0)}
    image = spec["image"]
    if image not in deployment.images:
        raise UnsupportedDeclaration(f"{name}: image {image!r} is not one the capture builds")
    container_spec: dict[str, Any] = {
        # The capture's image id (the mocks' repoDigest) stands for the one built here. The provider's create
        # asks a registry for a digest to pin; an image id has none, and it is sent as declared.
        "Image": deployment.images[image],
        "Hostname": spec.get("hostname", ""),
        "User": spec.get("user", ""),
        "ReadOnly": bool(spec.get("readOnly", False)),
        "Mounts": [_mount(name, m) for m in spec.get("mounts", [])],
        "StopGracePeriod": _nanoseconds(name, spec.get("stopGracePeriod", "0s")),
        "Healthcheck": healthcheck,
        "Hosts": hosts,
        "Secrets": [_file_reference(deployment, name, s, "secret") for s in spec.get("secrets", [])],
        "Configs": [_file_reference(deployment, name, c, "config") for c in spec.get("configs", [])],
        "Isolation": "default",
        "Init": False,
        # Test only (TEST_ONLY_INPUTS): the test zone's resolver behind the swarm's own DNS.
        "DNSConfig": {"Nameservers": deployment.dns} if deployment.dns else {},
    }
    for key, source in (("Command", "commands"), ("Args", "args"), ("CapabilityAdd", "capAdds"),
                        ("CapabilityDrop", "capDrops")):
        if spec.get(source):
            container_spec[key] = list(spec[source])

    template: dict[str, Any] = {"ContainerSpec": container_spec, "Placement": {}}
    if "resources" in task:
        _only(f"{name} resources", task["resources"], RESOURCES_INPUTS)
        limits = task["resources"].get("limits", {})
        _only(f"{name} limits", limits, LIMITS_INPUTS)
        template["Resources"] = {"Limits": {"NanoCPUs": limits.get("nanoCpus", 0),
                                            "MemoryBytes": limits.get("memoryBytes", 0)}}
    if "restartPolicy" in task:
        policy = task["restartPolicy"]
        _only(f"{name} restartPolicy", policy, RESTART_INPUTS)
        # Every field of a declared block is sent: an empty duration as 0.
        template["RestartPolicy"] = {"Condition": policy.get("condition", ""),
                                     "Delay": _nanoseconds(name, policy.get("delay", "")),
                                     "MaxAttempts": policy.get("maxAttempts", 0),
                                     "Window": _nanoseconds(name, policy.get("window", ""))}
    if "placement" in task:
        _only(f"{name} placement", task["placement"], PLACEMENT_INPUTS)
        template["Placement"] = {"Constraints": list(task["placement"].get("constraints", []))}
    networks = []
    for network in task.get("networksAdvanceds", []):
        _only(f"{name} networksAdvanceds", network, NETWORK_ATTACHMENT_INPUTS)
        networks.append({"Target": _real(deployment, name, network["id"]), "Aliases": list(network.get("aliases", []))})
    if len(networks) != 1:
        raise UnsupportedDeclaration(f"{name}: expected one network, got {networks}")
    template["Networks"] = networks
    if "logDriver" in task:
        _only(f"{name} logDriver", task["logDriver"], LOG_DRIVER_INPUTS)
        template["LogDriver"] = {"Name": task["logDriver"]["name"], "Options": dict(task["logDriver"].get("options", {}))}

    mode: dict[str, Any] = {"Replicated": {"Replicas": 1}}
    if "mode" in inputs:
        _only(f"{name} mode", inputs["mode"], MODE_INPUTS)
        replicated = inputs["mode"]["replicated"]
        _only(f"{name} mode.replicated", replicated, REPLICATED_INPUTS)
        mode = {"Replicated": {"Replicas": replicated.get("replicas", 1)}}
    endpoint: dict[str, Any] = {}
    if "endpointSpec" in inputs:
        _only(f"{name} endpointSpec", inputs["endpointSpec"], ENDPOINT_INPUTS)
        ports = []
        for port in inputs["endpointSpec"].get("ports", []):
            _only(f"{name} port", port, PORT_INPUTS)
            if port.get("publishMode", "ingress") != "host":
                # The routing mesh needs IPVS, which this kernel lacks (DESIGN.md).
                raise UnsupportedDeclaration(f"{name}: only host-mode ports are deployed here, got {port}")
            ports.append({"Name": port.get("name", ""), "Protocol": port.get("protocol", "tcp"),
                          "TargetPort": port["targetPort"], "PublishedPort": port.get("publishedPort", 0),
                          "PublishMode": port["publishMode"]})
        endpoint = {"Mode": inputs["endpointSpec"].get("mode", ""), "Ports": ports}
    return {
        "name": inputs["name"],
        "task_template": template,
        "mode": mode,
        "update_config": _update_config(f"{name} updateConfig", inputs.get("updateConfig")),
        "rollback_config": _update_config(f"{name} rollbackConfig", inputs.get("rollbackConfig")),
        "endpoint_spec": endpoint,
    }


def deploy_swarm(
    client: docker.DockerClient,
    capture: Capture,
    images: dict[str, str],
    test_services: Optional[Callable[[SwarmDeployment], list[str]]] = None,
    converge_seconds: float = 240,
) -> SwarmDeployment:
    """Creates the declared network, volumes, secrets, configs and services; waits until every
    service runs its replicas; reads every object back as the provider would.

    test_services, when given, starts the test's own containers on the new
    overlay network (adding them to deployment.test_services) before any
    service, and returns the resolver every task then uses (TEST_ONLY_INPUTS).
    On any failure, what was created so far is removed before the error is raised.
    """
    declared_types = {r.type for r in capture.resources if r.type.startswith("docker:")}
    if declared_types - DOCKER_TYPES:
        raise UnsupportedDeclaration(f"a swarm stack declares {sorted(declared_types - DOCKER_TYPES)}")
    deployment = SwarmDeployment(client=client, images=images)
    try:
        for network in capture.of_type(NETWORK):
            _only(network.name, network.inputs, NETWORK_INPUTS)
            if network.inputs.get("driver") != "overlay":
                raise UnsupportedDeclaration(f"{network.name}: a swarm stack's network is an overlay")
            # attachable: test only (TEST_ONLY_NETWORK_INPUTS).
            created = client.networks.create(network.inputs["name"], driver="overlay", attachable=True)
            deployment.networks.append(created)
            deployment.real_ids[network.outputs["id"]] = created.id
        for volume in capture.of_type(VOLUME):
            _only(volume.name, volume.inputs, VOLUME_INPUTS)
            deployment.volumes.append(client.volumes.create(volume.inputs["name"]))
        for kind, store, target in ((SECRET, client.secrets, deployment.secrets),
                                    (CONFIG, client.configs, deployment.configs)):
            for declared in capture.of_type(kind):
                _only(declared.name, declared.inputs, FILE_INPUTS)
                # The provider decodes the declared base64 (base64.StdEncoding) and sends the bytes.
                data = base64.b64decode(declared.inputs["data"], validate=True)
                created = store.create(name=declared.inputs["name"], data=data)
                created.reload()
                target[declared.name] = created
                deployment.real_ids[declared.outputs["id"]] = created.id
        deployment.dns = test_services(deployment) if test_services is not None else None
        specs = {d.name: service_spec(deployment, d) for d in capture.of_type(SERVICE)}
        for name, spec in specs.items():
            created = client.api.create_service(**spec)
            deployment.services[name] = client.services.get(created["ID"])
        wait_until_running(deployment, capture, converge_seconds)
        # The provider's Create ends with Read: what it stores must be what the program declares.
        problems = read_back(deployment, capture)
        if problems:
            raise ReadBackDifference("a second `pulumi up` would change:\n  " + "\n  ".join(problems))
    except BaseException:
        deployment.remove()
        raise
    return deployment


def replicas(declared: DeclaredResource) -> int:
    return int(declared.inputs.get("mode", {}).get("replicated", {}).get("replicas", 1))


def wait_until_running(deployment: SwarmDeployment, capture: Capture, timeout: float) -> None:
    """Waits until each service runs as many healthy tasks as it declares replicas; fails early
    when a service's tasks keep failing. The failure names every service that is not running,
    with its tasks' errors and its last log lines."""
    wanted = {d.name: replicas(d) for d in capture.of_type(SERVICE)}
    deadline = time.monotonic() + timeout
    while True:
        lagging: dict[str, str] = {}
        given_up = []
        for name, service in deployment.services.items():
            tasks = service.tasks()
            running = [t for t in tasks if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]
            failed = [t for t in tasks if t["Status"]["State"] in ("failed", "rejected")]
            if len(running) < wanted[name]:
                lagging[name] = (f"{service.name}: {len(running)}/{wanted[name]} running, tasks "
                                 f"{sorted(t['Status']['State'] for t in tasks)}"
                                 + "".join(f"\n    {t['Status']['State']}: {t['Status'].get('Err', '')}"
                                           for t in failed[-2:]))
            if len(failed) >= FAILED_TASKS_LIMIT:
                given_up.append(service.name)
        if not lagging:
            return
        if given_up or time.monotonic() > deadline:
            why = f"tasks of {', '.join(given_up)} keep failing" if given_up else f"not running after {timeout}s"
            raise AssertionError(f"services {why}:\n" + "".join(
                f"{line}\n--- last log lines:\n{_tail(deployment, deployment.services[name])}\n"
                for name, line in lagging.items()))
        time.sleep(2)


def _tail(deployment: SwarmDeployment, service: Any, lines: int = 30) -> str:
    chunks = deployment.client.api.service_logs(service.id, stdout=True, stderr=True, tail=lines)
    return b"".join(chunks).decode(errors="replace")


def declared_for_read_back(deployment: SwarmDeployment, declared: DeclaredResource) -> dict[str, Any]:
    """The declared service inputs as `pulumi up` would resolve them: the real ids of the image,
    the network, the secrets and configs in place of the capture's."""
    inputs = {**declared.inputs}
    task = {**inputs["taskSpec"]}
    spec = {**task["containerSpec"], "image": deployment.images[task["containerSpec"]["image"]]}
    for kind in ("secret", "config"):
        if f"{kind}s" in spec:
            spec[f"{kind}s"] = [{**r, f"{kind}Id": deployment.real_ids[r[f"{kind}Id"]]} for r in spec[f"{kind}s"]]
    task["containerSpec"] = spec
    task["networksAdvanceds"] = [{**n, "id": deployment.real_ids[n["id"]]} for n in task["networksAdvanceds"]]
    inputs["taskSpec"] = task
    return inputs


def read_back(deployment: SwarmDeployment, capture: Capture) -> list[str]:
    """Every difference between the declarations and what the provider would read back."""
    client = deployment.client
    problems = []
    for declared in capture.of_type(SERVICE):
        inspect = client.api.inspect_service(deployment.services[declared.name].id)
        problems += [f"service {declared.name}: {d}" for d in readback.service_differences(
            declared_for_read_back(deployment, declared), inspect, ignore=TEST_ONLY_INPUTS)]
    for declared in capture.of_type(NETWORK):
        network = client.networks.get(deployment.real_ids[declared.outputs["id"]])
        problems += [f"network {declared.name}: {d}" for d in
                     readback.network_differences(declared.inputs, network.attrs, ignore=TEST_ONLY_NETWORK_INPUTS)]
    for declared in capture.of_type(VOLUME):
        volume = client.volumes.get(declared.inputs["name"])
        problems += [f"volume {declared.name}: {d}" for d in readback.volume_differences(declared.inputs, volume.attrs)]
    for declared in capture.of_type(SECRET):
        inspect = client.api.inspect_secret(deployment.secrets[declared.name].id)
        problems += [f"secret {declared.name}: {d}" for d in readback.secret_differences(declared.inputs, inspect)]
    for declared in capture.of_type(CONFIG):
        inspect = client.api.inspect_config(deployment.configs[declared.name].id)
        problems += [f"config {declared.name}: {d}" for d in readback.config_differences(declared.inputs, inspect)]
    return problems


def swarm_leftovers(client: docker.DockerClient, prefix: str) -> Iterator[str]:
    """Services, secrets and configs whose names start `<prefix>-` (deploy.leftovers has the rest)."""
    start = prefix + "-"
    for kind, listing in (("service", client.services.list), ("secret", client.secrets.list),
                          ("config", client.configs.list)):
        for item in listing():
            if item.name.startswith(start):
                yield f"{kind} {item.name}"
