"""The offline preview: deterministic, diffable, free of secrets, needs neither Pulumi CLI nor Docker."""

from __future__ import annotations

import difflib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offline.capture import PROJECT_DIR
from offline.preview import HIDDEN, _mask

COPY_IGNORE = shutil.ignore_patterns(".venv", ".cache", ".git", "artifacts", "__pycache__", "tests", "preview-out")


def preview(out: Path, project: Path = PROJECT_DIR, *stacks: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "offline.preview", "--out", str(out), "--project", str(project), *stacks],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def changed_lines(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    changes = {}
    for name in sorted(set(before) | set(after)):
        diff = [
            line
            for line in difflib.unified_diff(before.get(name, "").splitlines(), after.get(name, "").splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        ]
        if diff:
            changes[name] = diff
    return changes


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("project") / "roundcube-authentik"
    shutil.copytree(PROJECT_DIR, copy, ignore=COPY_IGNORE)
    return copy


def test_two_runs_write_identical_trees(tmp_path: Path) -> None:
    first, second = preview(tmp_path / "a"), preview(tmp_path / "b")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a == b
    for stack in ("dev", "prod"):
        assert f"{stack}/resources.yaml" in a
        for path in ("etc/dovecot/dovecot.conf", "etc/postfix/main.cf", "etc/postfix/master.cf", "etc/roundcube/config.inc.php"):
            assert any(name.startswith(f"{stack}/files/") and name.endswith(path) for name in a), path


def test_changing_one_setting_changes_only_its_lines(project_copy: Path, tmp_path: Path) -> None:
    assert preview(tmp_path / "before", project_copy, "dev").returncode == 0
    stack_file = project_copy / "stacks" / "Pulumi.dev.yaml"
    original = stack_file.read_text()
    try:
        stack_file.write_text(original.replace("access_token_validity: minutes=10", "access_token_validity: minutes=15"))
        result = preview(tmp_path / "after", project_copy, "dev")
        assert result.returncode == 0, result.stderr
        changes = changed_lines(tree(tmp_path / "before"), tree(tmp_path / "after"))
        assert changes == {
            "dev/resources.yaml": ["-    accessTokenValidity: minutes=10", "+    accessTokenValidity: minutes=15"]
        }

        stack_file.write_text(original.replace("mail_hostname: mail.example.test", "mail_hostname: mx.example.test"))
        assert preview(tmp_path / "host", project_copy, "dev").returncode == 0
        changes = changed_lines(tree(tmp_path / "before"), tree(tmp_path / "host"))
        main_cf = next(name for name in changes if name.endswith("etc/postfix/main.cf"))
        assert changes[main_cf] == ["-myhostname = mail.example.test", "+myhostname = mx.example.test"]
        # Dovecot and Roundcube don't use the host name: their files are untouched.
        assert not any(name.endswith(("dovecot.conf", "config.inc.php")) for name in changes)
    finally:
        stack_file.write_text(original)


def test_no_secret_appears_in_the_output(project_copy: Path, tmp_path: Path) -> None:
    stack_file = project_copy / "stacks" / "Pulumi.dev.yaml"
    original = stack_file.read_text()
    encrypted = "v1:Q0hBTkdFTUU6c2VjcmV0LXRva2VuLWNpcGhlcnRleHQ="
    try:
        # A stack with an encrypted authentik token, as `pulumi config set --secret` writes it.
        stack_file.write_text(original + f"  authentik:token:\n    secure: {encrypted}\n")
        result = preview(tmp_path / "out", project_copy, "dev")
        assert result.returncode == 0, result.stderr
    finally:
        stack_file.write_text(original)
    output = "\n".join(tree(tmp_path / "out").values())
    assert encrypted not in output and "secret-token" not in output
    dovecot = next(t for n, t in tree(tmp_path / "out").items() if n.endswith("dovecot.conf"))
    # Local token validation (the dev stack's default): the client id is the audience.
    assert "audience = __SECRET_credentials-oauth-client-id__" in dovecot
    roundcube = next(t for n, t in tree(tmp_path / "out").items() if n.endswith("config.inc.php"))
    assert "__SECRET_credentials-roundcube-des-key__" in roundcube
    assert "PRIVATE KEY" not in output


def test_a_secret_input_that_is_not_a_placeholder_is_hidden() -> None:
    inputs = {"name": "x", "envs": ["TOKEN=hunter2"], "uploads": [{"file": "/etc/x.conf", "content": "password=hunter2"}]}
    masked = _mask(inputs, "", {"envs", "uploads"})
    assert masked == {"name": "x", "envs": [HIDDEN], "uploads": [{"file": "/etc/x.conf", "content": HIDDEN}]}
    assert _mask({"content": "id=__SECRET_client-id__"}, "", {"content"}) == {"content": "id=__SECRET_client-id__"}


def test_runs_without_pulumi_cli_docker_or_network(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Only this Python on PATH: no pulumi, no docker client, no engine socket.
    (bin_dir / "python").symlink_to(sys.executable)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "DOCKER_HOST": "unix:///nonexistent.sock", "LANG": "C.UTF-8"}
    command = [sys.executable, "-m", "offline.preview", "--out", str(tmp_path / "out")]
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        command = [unshare, "-rn", *command]  # and no network at all
    result = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "dev: " in result.stdout and "prod: " in result.stdout
    assert (tmp_path / "out" / "prod" / "resources.yaml").is_file()
    assert shutil.which("pulumi", path=env["PATH"]) is None and shutil.which("docker", path=env["PATH"]) is None


def test_a_swarm_stacks_configs_and_secrets_appear_as_the_files_its_tasks_see(tmp_path: Path) -> None:
    from offline.preview import main

    assert main(["--out", str(tmp_path), "swarm"]) == 0
    files = tmp_path / "swarm" / "files"
    roundcube = (files / "roundcube-authentik-swarm-roundcube/etc/roundcube/config.inc.php").read_text()
    assert "pgsql://roundcube:__SECRET_credentials-roundcube-db-password__@postgres" in roundcube
    assert (files / "roundcube-authentik-swarm-balancer/etc/haproxy/haproxy.cfg").read_text().startswith("# Rendered")
    assert (files / "roundcube-authentik-swarm-directory/etc/roundcube-authentik/directory/token").read_text() \
        .startswith("__SECRET_")
