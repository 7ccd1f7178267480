"""Stack files reach the program exactly as the Pulumi CLI hands them over.

Every example stack, every way of leaving a setting unset, and a stack file
as `pulumi config set` rewrites it, run through the one reader
(offline/stack_file.py) and the real program under Pulumi's mocks.
"""

from __future__ import annotations

import builtins
import io
import shutil
from pathlib import Path

import pulumi
import pytest
import yaml

from components.settings import Settings, load_settings
from offline.capture import PROJECT_DIR, Capture, capture, read_stack
from offline.stack_file import StackConfig, read_stack_file, read_stack_text

PROJECT = "roundcube-authentik"
EXAMPLE_STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (PROJECT_DIR / "stacks").glob("Pulumi.*.yaml"))
OPTIONAL = sorted(name for name, field in Settings.model_fields.items() if not field.is_required())
REQUIRED = sorted(name for name, field in Settings.model_fields.items() if field.is_required())
CA_FIXTURE = "tests/unit/fixtures/authentik-ca.pem"  # relative to the project folder, as a user would write it


def graph(c: Capture) -> list[tuple]:
    # Sorted: the runtime registers resources concurrently, in no fixed order.
    return sorted(
        ((r.type, r.name, r.parent_name, r.inputs, sorted(r.secret_paths), r.protect) for r in c.resources),
        key=lambda entry: (entry[0], entry[1]),
    )


def from_text(text: str) -> StackConfig:
    return read_stack_text(text, PROJECT, decrypt=lambda key: f"decrypted-{key}")


# -- the reader follows the CLI's rules --------------------------------------------------


def test_the_reader_hands_over_text_as_the_cli_does() -> None:
    config = from_text(
        """
config:
  authentik:url: https://auth.example.com
  authentik:token:
    secure: v1:c2VjcmV0
  roundcube-authentik:dev: true
  roundcube-authentik:port: 8080
  roundcube-authentik:ratio: 1.50
  roundcube-authentik:nothing: null
  roundcube-authentik:tilde: ~
  roundcube-authentik:empty:
  roundcube-authentik:quoted: "null"
  roundcube-authentik:yes_word: yes
  roundcube-authentik:ports:
    http: 8080
    imaps: null
    on: yes
    time: 1:20
"""
    )
    v = config.values
    assert v["roundcube-authentik:dev"] == "true"
    assert v["roundcube-authentik:port"] == "8080"
    assert v["roundcube-authentik:ratio"] == "1.50", "the scalar's text, not a re-formatted number"
    # A top-level null never arrives as "null": the CLI's Go string stays empty.
    assert v["roundcube-authentik:nothing"] == v["roundcube-authentik:tilde"] == v["roundcube-authentik:empty"] == ""
    assert v["roundcube-authentik:quoted"] == "null"
    assert v["roundcube-authentik:yes_word"] == "yes"
    # Objects: Go's json.Marshal (sorted keys, no spaces); nested nulls stay null; YAML 1.2 scalars.
    assert v["roundcube-authentik:ports"] == '{"http":8080,"imaps":null,"on":"yes","time":"1:20"}'
    assert config.secret_keys == {"authentik:token"}
    assert v["authentik:token"] == "decrypted-authentik:token"
    assert config.object_keys == {"roundcube-authentik:ports"}


def test_nested_secure_values_make_the_whole_object_secret() -> None:
    config = from_text("config:\n  roundcube-authentik:tls:\n    cert_file: /c\n    key_file:\n      secure: v1:abc\n")
    assert config.secret_keys == {"roundcube-authentik:tls"}
    assert config.values["roundcube-authentik:tls"] == '{"cert_file":"/c","key_file":"decrypted-roundcube-authentik:tls"}'


# -- every example stack runs --------------------------------------------------------------


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_every_example_stack_runs_the_program_as_the_cli_reads_it(stack: str) -> None:
    config = read_stack(stack)
    declared = capture(stack, config, placeholders=True)
    types = {r.type for r in declared.resources}
    assert "authentik:index/providerOauth2:ProviderOauth2" in types
    services = {c.inputs["hostname"] for c in declared.of_type("docker:index/container:Container") if "hostname" in c.inputs}
    # Swarm stacks: the same services, as Swarm services.
    services |= {s.inputs["taskSpec"]["containerSpec"]["hostname"] for s in declared.of_type("docker:index/service:Service")}
    assert {"dovecot", "postfix", "roundcube"} <= services
    assert declared.exports["webmail_url"] == config.get("roundcube_url")


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_example_stacks_leave_settings_unset_by_omission_not_null(stack: str) -> None:
    config = read_stack(stack)
    empty = [key for key, value in config.values.items() if value == ""]
    assert empty == [], f"write an unset setting as a commented-out example line, not null: {empty}"


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_a_stack_rewritten_by_pulumi_config_set_declares_the_same_graph(stack: str, tmp_path: Path) -> None:
    original = read_stack(stack)
    rewritten_file = tmp_path / f"Pulumi.{stack}.yaml"
    rewritten_file.write_text(original.as_rewritten_by_config_set())
    # e.g. `dev: true` comes back as `dev: 'true'`: still the text "true" for the program.
    assert "'true'" in rewritten_file.read_text() or "'false'" in rewritten_file.read_text()
    rewritten = read_stack(stack, stack_file=rewritten_file)
    assert rewritten.values == original.values
    assert graph(capture(stack, rewritten)) == graph(capture(stack, original))


# -- null, "" and absent are the same -------------------------------------------------------


def _minimal_stack() -> dict[str, object]:
    return {"mail_domain": "example.test", "roundcube_url": "https://mail.example.test",
            "authentik_url": "https://auth.example.test", "directory": {"postmaster": "alice@example.test"}}


def _stack_text(settings: dict[str, object], extra_line: str = "") -> str:
    text = yaml.safe_dump({"config": {f"{PROJECT}:{k}": v for k, v in settings.items()}}, sort_keys=False)
    return text + (f"  {PROJECT}:{extra_line}\n" if extra_line else "")


@pytest.mark.parametrize("name", OPTIONAL)
def test_an_optional_setting_absent_null_or_empty_gives_the_same_settings_and_graph(name: str) -> None:
    base = _minimal_stack()
    base.pop(name, None)
    variants = {
        "absent": from_text(_stack_text(base)),
        "null": from_text(_stack_text(base, f"{name}: null")),
        "empty string": from_text(_stack_text(base, f'{name}: ""')),
        "as pulumi config set rewrites a null": from_text(_stack_text(base, f"{name}: ''")),
    }
    settings = {how: load_settings(c.values, PROJECT) for how, c in variants.items()}
    assert settings["null"] == settings["absent"] == settings["empty string"] == settings["as pulumi config set rewrites a null"]
    assert getattr(settings["null"], name) == Settings.model_fields[name].get_default(call_default_factory=True)
    graphs = {how: graph(capture("dev", c)) for how, c in variants.items()}
    assert graphs["null"] == graphs["absent"] == graphs["empty string"] == graphs["as pulumi config set rewrites a null"]


@pytest.mark.parametrize("name", REQUIRED)
def test_a_required_setting_left_null_is_reported_as_not_set(name: str) -> None:
    base = _minimal_stack()
    base.pop(name)
    with pytest.raises(pulumi.RunError, match=f"{PROJECT}:{name}: required, not set") as raised:
        capture("dev", from_text(_stack_text(base, f"{name}: null")))
    assert raised.value.declared == []  # type: ignore[attr-defined]


def test_the_old_example_stacks_with_nulls_still_run() -> None:
    # Stack files written before the example stacks dropped their nulls, as
    # users may still have them: every optional setting spelled `null`.
    base = _minimal_stack()
    lines = "".join(f"  {PROJECT}:{name}: null\n" for name in OPTIONAL if name not in base)
    config = from_text(_stack_text(base) + lines)
    assert graph(capture("dev", config)) == graph(capture("dev", from_text(_stack_text(base))))


# -- the project's name and the CA file -------------------------------------------------------


def test_the_settings_follow_the_projects_name(tmp_path: Path) -> None:
    copy = tmp_path / "renamed"
    shutil.copytree(PROJECT_DIR, copy, ignore=shutil.ignore_patterns(".venv", ".git", ".cache", "artifacts", "__pycache__"))
    pulumi_yaml = copy / "Pulumi.yaml"
    pulumi_yaml.write_text(pulumi_yaml.read_text().replace("name: roundcube-authentik", "name: team-webmail"))
    stack_file = copy / "stacks" / "Pulumi.dev.yaml"
    stack_file.write_text(stack_file.read_text().replace("roundcube-authentik:", "team-webmail:"))
    config = read_stack("dev", project_dir=copy)
    assert config.project == "team-webmail" and "team-webmail:mail_domain" in config.values
    renamed = capture("dev", config, project_dir=copy)
    # Only the stack's own root resource (the components' parent) carries the project's name.
    # The serialized process-limit provider holds its source file's path (the
    # copy's here); its diff compares only its three settings, so that never
    # shows as a change.
    def without_provider(c: Capture) -> list[tuple]:
        return [(*entry[:3], {k: v for k, v in entry[3].items() if k != "__provider"}, *entry[4:]) for entry in graph(c)]

    assert repr(without_provider(renamed)).replace("'team-webmail-dev'", "'roundcube-authentik-dev'") == repr(
        without_provider(capture("dev", read_stack("dev")))
    )


def test_a_relative_ca_file_is_read_from_the_project_folder_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file).endswith("authentik-ca.pem"):
            reads.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.chdir("/")  # pulumi runs the program in the project folder; capture does the same
    config = read_stack("dev").with_values(authentik_ca_file=CA_FIXTURE)
    declared = capture("dev", config, placeholders=True)
    assert len(reads) == 1, reads
    pem = (PROJECT_DIR / CA_FIXTURE).read_text()
    for service in ("dovecot", "roundcube"):
        uploads = declared.uploads(service).values()
        assert [u["content"] for u in uploads if u["file"].endswith("authentik-ca.pem")] == [pem]


def test_a_ca_file_that_is_not_there_names_the_machine_it_is_looked_for_on() -> None:
    config = read_stack("dev").with_values(authentik_ca_file="certs/missing-ca.pem")
    with pytest.raises(pulumi.RunError, match=r"authentik_ca_file must be a readable PEM file on the machine that runs pulumi, "
                                              r"cannot read 'certs/missing-ca.pem' \(relative to .*\)"):
        capture("dev", config)


def test_the_unit_ca_fixture_is_a_certificate_only() -> None:
    # It is committed: no private key may be in it.
    text = (PROJECT_DIR / CA_FIXTURE).read_text()
    assert "BEGIN CERTIFICATE" in text and "PRIVATE KEY" not in text


def test_read_stack_file_reads_the_file() -> None:
    path = PROJECT_DIR / "stacks" / "Pulumi.prod.yaml"
    assert read_stack_file(path, PROJECT, decrypt=str).values == read_stack("prod").values
