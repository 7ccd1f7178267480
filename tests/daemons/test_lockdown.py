"""Each daemon runs locked down exactly as components/containers.py declares it:
all capabilities dropped but its own list, no-new-privileges, a memory limit,
and a healthcheck that exercises the service and passes."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import PurePosixPath

import docker
import docker.errors
import pytest

from components import service as containers
from offline.capture import capture_stack
from offline.dynamic_provider import ProviderFailed, run_provider
from components.render import layout
from daemon_harness import Pki, Resources, Stack, Upload, container_logs, exec_in, hardened, make_variant, tar_of


@pytest.mark.parametrize("service", ["dovecot", "postfix", "roundcube"])
def test_each_daemon_runs_with_only_its_capabilities_and_its_healthcheck_passes(stack: Stack, service: str) -> None:
    container = getattr(stack, service)
    deadline = time.monotonic() + 90
    while True:
        container.reload()
        health = container.attrs["State"]["Health"]
        if health["Status"] == "healthy" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert health["Status"] == "healthy", health["Log"][-3:]
    host = container.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert {c.removeprefix("CAP_") for c in host["CapAdd"]} == set(containers.CAPABILITIES[service])
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Memory"] == getattr(stack.variant.settings.memory_mb, service) * 1024 * 1024
    assert not host["Privileged"]
    # A read-only root: only the listed tmpfs and the volumes are writable,
    # and the config folders (from the carrier) are read-only.
    assert host["ReadonlyRootfs"] is True and host["Tmpfs"] == containers.SCRATCH[service]
    assert len(host["VolumesFrom"]) == 1 and host["VolumesFrom"][0].endswith(":ro")
    probes = ["/usr/local/bin/probe", config_file[service]]
    for path in probes:
        write = container.exec_run(["sh", "-c", f"echo x > {path}"], user="root")
        assert write.exit_code != 0 and b"Read-only file system" in write.output, (path, write.output)
    # The kernel agrees: PID 1's bounding set holds exactly the listed capabilities.
    status = container.exec_run(["grep", "CapBnd", "/proc/1/status"]).output.decode()
    expected = sum(1 << CAP_NUMBERS[c] for c in containers.CAPABILITIES[service])
    assert int(status.split()[1], 16) == expected, status


# A file of each daemon's config, on its carrier's read-only volume.
config_file = {
    "dovecot": layout.DOVECOT_CONF, "postfix": layout.POSTFIX_MAIN_CF, "roundcube": layout.ROUNDCUBE_CONFIG,
}


# linux/capability.h
CAP_NUMBERS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
               "NET_BIND_SERVICE": 10, "SYS_CHROOT": 18}


# -- the process limit: the program's own dynamic provider, run as Pulumi runs it --


PIDS_LIMIT = "pulumi-python:dynamic/roundcube-authentik:PidsLimit"
# The engine the tests' client talks to (docker.from_env), as a stack's docker_host.
ENGINE = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def test_the_declared_process_limit_bounds_each_daemon_and_a_fork_burst_fails_while_it_serves(
    stack: Stack, docker_client: docker.DockerClient
) -> None:
    # The provider exactly as the program puts it into the state, loaded in an
    # isolated interpreter as Pulumi's provider host loads it.
    declared = capture_stack("dev", placeholders=True)
    limit = declared.one(PIDS_LIMIT, "-dovecot-pids-limit").inputs
    host = ENGINE
    limits = stack.variant.settings.pids_limit
    for service in ("dovecot", "postfix", "roundcube", "opendkim"):
        container = getattr(stack, service)
        news = {"docker_host": host, "container_id": container.id, "pids_limit": getattr(limits, service)}
        assert run_provider(limit, news)["id"] == container.id
        container.reload()
        assert container.attrs["HostConfig"]["PidsLimit"] == getattr(limits, service)
        # The kernel agrees: the container's pids cgroup has that maximum.
        assert exec_in(container, ["cat", "/sys/fs/cgroup/pids/pids.max"]).strip() == str(getattr(limits, service))

    # A burst of forks in Dovecot stops at a tight limit (set by the provider's
    # update), and Dovecot still greets and stays healthy.
    dovecot = stack.dovecot
    declared_limit = {"docker_host": host, "container_id": dovecot.id, "pids_limit": limits.dovecot}
    running = int(exec_in(dovecot, ["cat", "/sys/fs/cgroup/pids/pids.current"]))
    tight = declared_limit | {"pids_limit": running + 20}
    run_provider(limit, tight, olds=declared_limit, id_=dovecot.id)
    burst = dovecot.exec_run(["sh", "-c", "for i in $(seq 1 60); do sleep 20 & done; wait"], user="root")
    assert burst.exit_code != 0 and b"fork" in burst.output.lower(), burst.output[-300:]
    # Back to the declared limit (no exec could start at the tight one); the
    # burst's sleeps still run, and never went past the tight limit.
    run_provider(limit, declared_limit, olds=tight, id_=dovecot.id)
    assert int(exec_in(dovecot, ["cat", "/sys/fs/cgroup/pids/pids.current"])) <= running + 20
    exec_in(dovecot, ["sh", "-c", "pkill -x sleep || true"])
    dovecot.reload()
    assert dovecot.attrs["HostConfig"]["PidsLimit"] == limits.dovecot
    assert dovecot.attrs["State"]["Health"]["Status"] == "healthy"


def test_a_failing_docker_call_fails_the_declared_provider(docker_client: docker.DockerClient) -> None:
    declared = capture_stack("dev", placeholders=True)
    limit = declared.one(PIDS_LIMIT, "-postfix-pids-limit").inputs
    host = ENGINE
    with pytest.raises(ProviderFailed, match="No such container"):
        run_provider(limit, {"docker_host": host, "container_id": "rca-no-such-container", "pids_limit": 64})


# -- what the lock-down cannot use, and why ---------------------------------------


def test_a_read_only_root_refuses_the_docker_providers_uploads_even_into_a_volume(
    resources: Resources, images: dict[str, str]
) -> None:
    """Why the config goes through a carrier container (components/containers.py).

    The docker provider (kreuzwerker/terraform-provider-docker, bridged by
    pulumi-docker) sends every `uploads` file as a tar extracted at "/"
    (`CopyToContainer(ctx, id, "/", ...)`). Docker checks the destination
    folder, not the files in the tar (moby daemon/archive.go,
    checkIfPathIsInAVolume): "/" is in no volume, so a read-only root refuses
    the upload even when the file lands in a writable volume. If an engine
    ever accepts it, the carriers can go.
    """
    config_dir = str(PurePosixPath(layout.DOVECOT_CONF).parent)
    container = resources.container(
        "read-only-root",
        images["dovecot"],
        {},
        start=False,
        read_only=True,
        mounts=[docker.types.Mount(config_dir, None, type="volume")],
    )
    upload = tar_of({layout.DOVECOT_CONF: Upload(b"# uploaded\n", 0o600)})
    with pytest.raises(docker.errors.APIError, match="read-only"):
        container.put_archive("/", upload)
    # The same file, sent to its own folder (which the provider never does), is accepted.
    assert container.put_archive(config_dir, tar_of({"/dovecot.conf": Upload(b"# uploaded\n", 0o600)}))


@pytest.mark.parametrize("service", ["dovecot", "postfix", "roundcube"])
def test_an_nproc_ulimit_of_one_still_lets_each_daemon_run_many_processes(
    resources: Resources, images: dict[str, str], pki: Pki, service: str
) -> None:
    """Why the process limit is Docker's pids limit (components/pids_limit.py), not a ulimit.

    pulumi-docker 5.2.0 has no pids limit; its `ulimits` can set RLIMIT_NPROC,
    but the kernel counts that per user id on the whole host (every container
    of that uid, since there is no user namespace), never limits uid 0, and
    checks it only at fork by a non-root user and at exec after a setuid. These
    daemons fork as root: Dovecot and Postfix exec their services as root and
    drop privileges after, Apache's children never exec. So even a limit of 1
    bounds nothing here.
    """
    variant = make_variant("dev", pki)
    files = {"dovecot": variant.dovecot_files, "postfix": variant.postfix_files, "roundcube": variant.roundcube_files}
    # The daemon's volumes, as deployed (the root is read-only).
    data = {"dovecot": [layout.MAIL_DIR, layout.SASL_SOCKET_DIR], "postfix": [layout.POSTFIX_SPOOL_DIR],
            "roundcube": [layout.ROUNDCUBE_DB_DIR]}
    container = resources.container(
        service,
        images[service],
        files[service](),
        mounts=[docker.types.Mount(path, None, type="volume") for path in data[service]],
        ulimits=[docker.types.Ulimit(name="nproc", soft=1, hard=1)],
        **hardened(service, variant.settings),
    )
    deadline = time.monotonic() + 90
    while True:
        container.reload()
        health = container.attrs["State"].get("Health", {})
        if health.get("Status") == "healthy" or container.status == "exited" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert health.get("Status") == "healthy", container_logs(container)
    assert "Max processes             1                    1" in exec_in(container, ["cat", "/proc/1/limits"])
    owners = exec_in(container, ["sh", "-c", "for p in /proc/[0-9]*; do stat -c %u $p; done"]).split()
    per_user = Counter(uid for uid in owners if uid != "0")
    assert max(per_user.values()) > 1, per_user


@pytest.mark.parametrize("service", ["dovecot", "postfix", "roundcube", "opendkim", "postgres", "balancer"])
def test_every_image_runs_its_daemon_with_no_new_privileges_even_without_dockers_option(
    resources: Resources, images: dict[str, str], service: str
) -> None:
    """Swarm services have no no-new-privileges switch in pulumi-docker 5.2.0: each
    image's entrypoint sets it (setpriv), so it holds whatever runs the image."""
    entrypoint = resources.client.images.get(images[service]).attrs["Config"]["Entrypoint"]
    assert entrypoint[:2] == ["setpriv", "--no-new-privs"], entrypoint
    # The same entrypoint, running a probe instead of the daemon, with no Docker option at all.
    probe = resources.container(
        f"nnp-{service}", images[service], {}, entrypoint=[*entrypoint[:2], "grep", "NoNewPrivs", "/proc/self/status"],
        command=[], start=True)
    assert probe.wait(timeout=60)["StatusCode"] == 0
    assert probe.logs().decode().split() == ["NoNewPrivs:", "1"]
    assert "no-new-privileges" not in str(probe.attrs["HostConfig"].get("SecurityOpt"))
