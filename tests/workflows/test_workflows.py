"""Offline checks of the GitHub Actions workflows in .github/workflows.

No GitHub, no network: the files are validated against the workflow schema
that check-jsonschema ships, audited by zizmor in offline mode, and their
behaviour is checked by parsing them and by running the shell snippets and the
github-script they contain against local fixtures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
ZIZMOR_CONFIG = ROOT / ".github" / "zizmor.yml"
BIN = Path(sys.executable).parent

WORKFLOW_FILES = sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])

PREVIEW = WORKFLOWS_DIR / "preview.yml"
DEPLOY = WORKFLOWS_DIR / "deploy.yml"
COMMENT = WORKFLOWS_DIR / "preview-comment.yml"

ARTIFACT = "offline-preview-diff"
MARKER = "<!-- roundcube-authentik:offline-preview-diff -->"

# A run step is executed by GitHub as `bash --noprofile --norc -eo pipefail`.
BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]


# ---------------------------------------------------------------- helpers


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def triggers(workflow: dict) -> dict:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return {name: None for name in on}
    return on


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def action(step: dict) -> str:
    """`owner/repo` of a step's `uses:` (without the ref)."""
    return step.get("uses", "").split("@", 1)[0]


def step_with_id(job: dict, step_id: str) -> dict:
    found = [s for s in steps(job) if s.get("id") == step_id]
    assert len(found) == 1, f"expected one step with id {step_id!r}"
    return found[0]


def pulumi_steps(job: dict) -> list[dict]:
    return [s for s in steps(job) if action(s) == "pulumi/actions"]


def all_jobs():
    for path in WORKFLOW_FILES:
        for job_id, job in load(path)["jobs"].items():
            yield path.name, job_id, job


def github_env(tmp_path: Path) -> dict[str, str]:
    """A minimal runner environment for a `run:` script."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "RUNNER_TEMP": str(tmp_path / "runner-temp"),
        "GITHUB_OUTPUT": str(tmp_path / "github-output"),
        "GITHUB_ENV": str(tmp_path / "github-env"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary"),
    }
    for key in ("HOME", "RUNNER_TEMP"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    for key in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_STEP_SUMMARY"):
        Path(env[key]).touch()
    return env


def read_outputs(path: str) -> dict[str, str]:
    outputs = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition("=")
        outputs[key] = value
    return outputs


def run_script(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script_file = cwd / ".step.sh"
    script_file.write_text(script)
    try:
        return subprocess.run(
            [*BASH, str(script_file)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        script_file.unlink()


# ---------------------------------------------------------- tool-based


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOW_FILES} >= {"preview.yml", "deploy.yml", "preview-comment.yml"}


def test_workflows_match_the_github_workflow_schema():
    exe = BIN / "check-jsonschema"
    assert exe.exists(), f"{exe} missing: pip install -r requirements-dev.txt"
    result = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOW_FILES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _zizmor(*extra: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    exe = BIN / "zizmor"
    assert exe.exists(), f"{exe} missing: pip install -r requirements-dev.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN")}
    result = subprocess.run(
        [str(exe), "--offline", "--no-progress", "--strict-collection", "--format", "json", *extra,
         str(WORKFLOWS_DIR)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    try:
        findings = json.loads(result.stdout or "null")
    except json.JSONDecodeError:
        pytest.fail(f"zizmor printed no JSON (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    assert isinstance(findings, list), result.stderr
    return result, findings


def _describe(findings: list[dict]) -> str:
    lines = []
    for f in findings:
        where = ", ".join(
            "{}:{}".format(
                loc["symbolic"]["key"].get("Local", {}).get("verbatim_path", "?"),
                loc["concrete"]["location"]["start_point"]["row"] + 1,
            )
            for loc in f.get("locations", [])
            if loc["symbolic"].get("kind") == "Primary"
        )
        lines.append(f"{f['ident']} ({f['determinations']['severity']}): {f['desc']} at {where}")
    return "\n".join(lines)


def test_zizmor_reports_no_findings():
    extra = ["--config", str(ZIZMOR_CONFIG)] if ZIZMOR_CONFIG.exists() else []
    result, findings = _zizmor(*extra)
    assert findings == [], "zizmor findings:\n" + _describe(findings)
    assert result.returncode == 0, result.stderr


def test_zizmor_config_ignores_only_the_workflow_run_trigger():
    """The config must hide exactly one, justified, finding and nothing else."""
    assert ZIZMOR_CONFIG.exists(), "the zizmor config justifying the workflow_run finding is missing"
    _, findings = _zizmor("--no-config")
    seen = {
        (f["ident"], Path(loc["symbolic"]["key"]["Local"]["verbatim_path"]).name)
        for f in findings
        for loc in f["locations"]
        if loc["symbolic"].get("kind") == "Primary"
    }
    assert seen <= {("dangerous-triggers", "preview-comment.yml")}, _describe(findings)


# ------------------------------------------------------ pins, permissions

USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
PINNED = re.compile(r"^(?P<action>[\w.-]+/[\w.-]+(?:/[\w./-]+)?)@(?P<sha>[0-9a-f]{40})$")
VERSION_COMMENT = re.compile(r"^\s+# v\d+\.\d+\.\d+\b")


def test_every_action_is_pinned_to_a_commit_with_a_version_comment():
    shas: dict[str, set[str]] = {}
    for path in WORKFLOW_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            m = USES_LINE.match(line)
            if not m:
                continue
            ref = m["ref"].strip("'\"")
            if ref.startswith("./"):
                continue
            pin = PINNED.match(ref)
            assert pin, f"{path.name}:{number}: {ref} is not pinned to a full commit SHA"
            assert VERSION_COMMENT.match(m["rest"]), f"{path.name}:{number}: no `# vX.Y.Z` comment"
            shas.setdefault(pin["action"], set()).add(pin["sha"])
    inconsistent = {a: s for a, s in shas.items() if len(s) > 1}
    assert not inconsistent, f"one action, several pins: {inconsistent}"
    assert {"actions/checkout", "actions/setup-python", "pulumi/actions"} <= shas.keys()


def test_least_privilege_permissions():
    # Jobs that may write, and what. Everything else is read-only.
    allowed_writes = {
        ("preview.yml", "pulumi-preview"): {"pull-requests"},
        ("preview-comment.yml", "comment"): {"pull-requests"},
    }
    for path in WORKFLOW_FILES:
        assert load(path).get("permissions") == {}, f"{path.name}: top-level `permissions: {{}}` missing"
    for name, job_id, job in all_jobs():
        assert "permissions" in job, f"{name}/{job_id}: no explicit permissions"
        perms = job["permissions"]
        assert isinstance(perms, dict), f"{name}/{job_id}: permissions must be a mapping"
        writes = {scope for scope, level in perms.items() if level == "write"}
        assert writes <= allowed_writes.get((name, job_id), set()), f"{name}/{job_id} writes {writes}"
        assert set(perms.values()) <= {"read", "write", "none"}


def test_no_expression_is_interpolated_into_scripts():
    """Untrusted text (PR titles, branch names, file names) reaches scripts only through env."""
    for name, job_id, job in all_jobs():
        for step in steps(job):
            where = f"{name}/{job_id}/{step.get('name') or step.get('id') or step.get('uses')}"
            if "run" in step:
                assert "${{ github.event" not in step["run"], where
                assert "${{" not in step["run"], f"{where}: pass values through env instead"
            if action(step) == "actions/github-script":
                assert "${{" not in step["with"]["script"], where


def test_checkouts_do_not_persist_credentials():
    for name, job_id, job in all_jobs():
        for step in steps(job):
            if action(step) == "actions/checkout":
                assert step.get("with", {}).get("persist-credentials") is False, f"{name}/{job_id}"


def test_pulumi_cli_version_matches_the_sdk_pin():
    pin = re.search(r"^pulumi==(\S+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert pin, "requirements.txt pins no pulumi version"
    for path in (PREVIEW, DEPLOY):
        for job in load(path)["jobs"].values():
            for step in pulumi_steps(job):
                assert str(step["with"]["pulumi-version"]) == pin[1], path.name


# ------------------------------------------------------------ the stacks


def listing_script(path: Path) -> str:
    return step_with_id(load(path)["jobs"]["stacks"], "list")["run"]


def run_listing(script: str, workdir: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = github_env(tmp_path)
    Path(env["GITHUB_OUTPUT"]).write_text("")
    result = run_script(script, workdir, env)
    return result, read_outputs(env["GITHUB_OUTPUT"])


def test_both_workflows_list_stacks_the_same_way():
    assert listing_script(PREVIEW) == listing_script(DEPLOY)


@pytest.mark.parametrize("path", [PREVIEW, DEPLOY], ids=lambda p: p.name)
def test_stack_listing_reads_stacks_folder(path: Path, tmp_path: Path):
    work = tmp_path / "repo"
    (work / "stacks" / "nested").mkdir(parents=True)
    for name in ("Pulumi.b.yaml", "Pulumi.a.yaml", "Pulumi.prod-eu_2.yaml", "Pulumi.c.yml",
                 "Pulumi.yaml", "README.md", "nested/Pulumi.d.yaml"):
        (work / "stacks" / name).write_text("config: {}\n")
    result, outputs = run_listing(listing_script(path), work, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(outputs["stacks"]) == ["a", "b", "prod-eu_2"]


def test_stack_listing_of_an_empty_folder_is_an_empty_list(tmp_path: Path):
    work = tmp_path / "repo"
    (work / "stacks").mkdir(parents=True)
    result, outputs = run_listing(listing_script(PREVIEW), work, tmp_path)
    assert result.returncode == 0, result.stderr
    assert outputs["stacks"] == "[]"


def test_stack_listing_refuses_hostile_file_names(tmp_path: Path):
    work = tmp_path / "repo"
    (work / "stacks").mkdir(parents=True)
    (work / "stacks" / 'Pulumi.x"]$(touch pwned).yaml').write_text("")
    result, outputs = run_listing(listing_script(PREVIEW), work, tmp_path)
    assert result.returncode != 0
    assert "not a valid Pulumi stack name" in result.stdout
    assert "stacks" not in outputs
    assert not (work / "pwned").exists()


def test_stack_listing_of_this_repository(tmp_path: Path):
    result, outputs = run_listing(listing_script(PREVIEW), ROOT, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
    assert json.loads(outputs["stacks"]) == expected


@pytest.mark.parametrize("path,job_id", [(PREVIEW, "pulumi-preview"), (DEPLOY, "up")])
def test_pulumi_jobs_fan_out_over_the_listed_stacks(path: Path, job_id: str):
    workflow = load(path)
    job = workflow["jobs"][job_id]
    assert workflow["jobs"]["stacks"]["outputs"]["stacks"] == "${{ steps.list.outputs.stacks }}"
    assert job["needs"] == "stacks" or "stacks" in job["needs"]
    assert job["strategy"]["matrix"] == {"stack": "${{ fromJSON(needs.stacks.outputs.stacks) }}"}
    assert job["strategy"]["fail-fast"] is False
    assert "needs.stacks.outputs.stacks != '[]'" in job["if"]  # an empty matrix is an error
    (pulumi,) = pulumi_steps(job)
    assert "matrix.stack" in pulumi["with"]["stack-name"]
    assert pulumi["with"]["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert pulumi["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    # Pulumi.yaml runs the program from .venv: it must be populated first.
    install = next(s for s in steps(job) if "requirements.txt" in s.get("run", ""))
    assert steps(job).index(install) < steps(job).index(pulumi)
    assert "-m venv .venv" in install["run"]
    setup = next(s for s in steps(job) if action(s) == "actions/setup-python")
    assert str(setup["with"]["python-version"]) == "3.11" and setup["with"]["cache"] == "pip"


# ---------------------------------------------------------------- deploy


def test_deploy_runs_up_per_stack_in_its_environment():
    workflow = load(DEPLOY)
    on = triggers(workflow)
    assert set(on) == {"push", "workflow_dispatch"}
    assert on["push"]["branches"] == ["main"]
    job = workflow["jobs"]["up"]
    assert job["environment"] == "${{ matrix.stack }}"
    assert job["concurrency"] == {"group": "pulumi-${{ matrix.stack }}", "cancel-in-progress": False}
    (pulumi,) = pulumi_steps(job)
    assert pulumi["with"]["command"] == "up"
    assert "default_branch" in workflow["jobs"]["stacks"]["if"]
    assert "pull_request" not in DEPLOY.read_text()


# --------------------------------------------------------------- preview


def test_preview_runs_on_pull_requests_and_skips_forks():
    workflow = load(PREVIEW)
    assert set(triggers(workflow)) == {"pull_request"}
    job = workflow["jobs"]["pulumi-preview"]
    condition = " ".join(job["if"].split())
    assert "github.event.pull_request.head.repo.full_name == github.repository" in condition
    (pulumi,) = pulumi_steps(job)
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["edit-pr-comment"] is True
    assert pulumi["with"]["github-token"] in ("${{ secrets.GITHUB_TOKEN }}", "${{ github.token }}")
    assert job["environment"] == "preview" and "concurrency" in job
    assert job["concurrency"]["cancel-in-progress"] is False  # never interrupt a pulumi operation


def test_offline_diff_needs_no_secrets_and_uploads_the_diff():
    job = load(PREVIEW)["jobs"]["offline-diff"]
    assert "if" not in job and "needs" not in job, "the offline diff must run for every PR, forks too"
    assert "secrets." not in json.dumps(job)
    assert job["runs-on"] == "ubuntu-latest"  # fork code never runs on a self-hosted runner
    checkouts = [s for s in steps(job) if action(s) == "actions/checkout"]
    assert len(checkouts) == 2
    assert {c["with"]["path"] for c in checkouts} == {"base", "head"}
    base = next(c for c in checkouts if c["with"]["path"] == "base")
    assert base["with"]["ref"] == "${{ github.event.pull_request.base.sha }}"
    upload = next(s for s in steps(job) if action(s) == "actions/upload-artifact")
    assert upload["with"]["name"] == ARTIFACT


def test_comment_workflow_follows_preview_and_never_runs_pr_code():
    preview = load(PREVIEW)
    workflow = load(COMMENT)
    on = triggers(workflow)
    assert set(on) == {"workflow_run"}
    assert on["workflow_run"]["workflows"] == [preview["name"]]
    assert on["workflow_run"]["types"] == ["completed"]
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"actions": "read", "pull-requests": "write"}
    assert "github.event.workflow_run.event == 'pull_request'" in job["if"]
    assert "secrets." not in COMMENT.read_text()
    for step in steps(job):
        assert "run" not in step, "no shell in the privileged workflow"
        assert action(step) in {"actions/github-script", "actions/download-artifact"}, step
    download = next(s for s in steps(job) if action(s) == "actions/download-artifact")
    assert download["with"]["name"] == ARTIFACT
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"


# ---------------------------- the offline diff and its comment, end to end

FAKE_PREVIEW = textwrap.dedent(
    """\
    import argparse, pathlib, sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("stacks", nargs="*")
    args = parser.parse_args()
    tree = pathlib.Path(__file__).with_name("tree.txt").read_text()
    if tree == "FAIL":
        sys.exit("boom")
    for line in tree.splitlines():
        name, _, content = line.partition("=")
        target = pathlib.Path(args.out, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content + "\\n")
    """
)


def make_side(root: Path, tree: str | None) -> None:
    """A checkout whose `.venv/bin/python -m offline.preview` writes `tree`."""
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    python = venv_bin / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    if tree is None:
        return  # a base branch without the offline preview yet
    (root / "offline").mkdir()
    (root / "offline" / "__init__.py").write_text("")
    (root / "offline" / "preview.py").write_text(FAKE_PREVIEW)
    (root / "offline" / "tree.txt").write_text(tree)


def render(tmp_path: Path, base: str | None, head: str | None) -> tuple[subprocess.CompletedProcess, Path, dict]:
    job = load(PREVIEW)["jobs"]["offline-diff"]
    step = step_with_id(job, "render")
    work = tmp_path / "workspace"
    work.mkdir()
    make_side(work / "base", base)
    make_side(work / "head", head)
    env = github_env(tmp_path)
    env["PR_NUMBER"] = "42"
    assert set(step["env"]) == {"PR_NUMBER"}
    result = run_script(step["run"], work, env)
    return result, Path(env["RUNNER_TEMP"]) / "offline-preview" / "artifact", read_outputs(env["GITHUB_OUTPUT"])


def test_offline_diff_of_a_change(tmp_path: Path):
    result, artifact, outputs = render(
        tmp_path,
        base="dev/dovecot.conf=auth_mechanisms = xoauth2\nprod/postfix.cf=a",
        head="dev/dovecot.conf=auth_mechanisms = oauthbearer xoauth2\nprod/postfix.cf=a\nqa/new.txt=x",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert outputs == {"base": "ok", "head": "ok"}
    diff = (artifact / "diff.patch").read_text()
    assert "-auth_mechanisms = xoauth2" in diff and "+auth_mechanisms = oauthbearer xoauth2" in diff
    assert "+++ head/qa/new.txt" in diff  # a new stack shows its files in full (-N)
    assert "postfix" not in diff
    assert (artifact / "pr-number").read_text() == "42\n"
    assert sorted(p.name for p in artifact.iterdir()) == ["base-status", "diff.patch", "head-status", "pr-number"]


def test_offline_diff_without_changes_is_empty(tmp_path: Path):
    result, artifact, _ = render(tmp_path, base="dev/a=1", head="dev/a=1")
    assert result.returncode == 0, result.stderr
    assert (artifact / "diff.patch").read_text() == ""


def test_offline_diff_survives_a_base_without_the_tool(tmp_path: Path):
    result, artifact, outputs = render(tmp_path, base=None, head="dev/a=1")
    assert result.returncode == 0, result.stderr
    assert outputs == {"base": "failed", "head": "ok"}
    assert "+++ head/dev/a" in (artifact / "diff.patch").read_text()


def test_offline_diff_records_a_broken_head(tmp_path: Path):
    result, artifact, outputs = render(tmp_path, base="dev/a=1", head="FAIL")
    assert result.returncode == 0, "the artifact is uploaded first; a later step fails the job"
    assert outputs["head"] == "failed"
    assert (artifact / "head-status").read_text().strip() == "failed"
    job = load(PREVIEW)["jobs"]["offline-diff"]
    last = steps(job)[-1]
    assert last["if"] == "steps.render.outputs.head != 'ok'" and "exit 1" in last["run"]


COMMENT_HARNESS = textwrap.dedent(
    """\
    const fs = require('fs');
    const scenario = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
    const script = fs.readFileSync(process.argv[3], 'utf8');
    const state = { created: [], updated: [], failed: null, notices: [] };
    const github = {
      rest: {
        pulls: { get: async ({ pull_number }) => {
          state.pull = pull_number;
          return { data: { head: { sha: scenario.prHeadSha } } };
        } },
        issues: {
          listComments: () => { throw new Error('use paginate'); },
          createComment: async (p) => { state.created.push(p); return { data: { html_url: 'u' } }; },
          updateComment: async (p) => { state.updated.push(p); return { data: {} }; },
        },
      },
      paginate: async (fn, params) => { state.listed = params; return scenario.comments; },
    };
    const core = {
      setFailed: (m) => { state.failed = String(m); },
      notice: (m) => state.notices.push(String(m)),
      info: () => {},
      setOutput: () => {},
    };
    const context = {
      repo: { owner: 'o', repo: 'r' },
      payload: { workflow_run: { id: 7, head_sha: scenario.runHeadSha,
                                 html_url: 'https://github.com/o/r/actions/runs/7' } },
    };
    const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
    new AsyncFunction('github', 'context', 'core', 'require', script)(github, context, core, require)
      .then(() => console.log(JSON.stringify(state)))
      .catch((e) => { console.error(e); process.exit(1); });
    """
)

SHA = "0123456789abcdef0123456789abcdef01234567"


def post_comment(tmp_path: Path, artifact: Path, comments=(), pr_head=SHA, run_head=SHA) -> dict:
    node = shutil.which("node")
    assert node is not None, "node is needed to run the comment script (scripts/test.sh installs it)"
    (job,) = load(COMMENT)["jobs"].values()
    step = next(s for s in steps(job) if action(s) == "actions/github-script" and "ARTIFACT_DIR" in s.get("env", {}))
    script = tmp_path / "script.js"
    script.write_text(step["with"]["script"])
    harness = tmp_path / "harness.js"
    harness.write_text(COMMENT_HARNESS)
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"comments": list(comments), "prHeadSha": pr_head, "runHeadSha": run_head}))
    result = subprocess.run(
        [node, str(harness), str(scenario), str(script)],
        env={"PATH": os.environ["PATH"], "ARTIFACT_DIR": str(artifact)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def write_artifact(path: Path, diff: str, pr: str = "42\n", head: str = "ok") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "diff.patch").write_text(diff)
    (path / "pr-number").write_text(pr)
    (path / "base-status").write_text("ok\n")
    (path / "head-status").write_text(head + "\n")
    return path


def test_comment_is_created_once_then_updated(tmp_path: Path):
    _, artifact, _ = render(tmp_path, base="dev/a=1", head="dev/a=2")
    state = post_comment(tmp_path, artifact)
    assert state["failed"] is None
    assert state["pull"] == 42 and state["listed"]["issue_number"] == 42
    (created,) = state["created"]
    body = created["body"]
    assert body.startswith(MARKER)
    assert "```diff\n" in body and "-1\n+2" in body
    assert "1 file(s) changed" in body

    others = [
        {"id": 1, "user": {"login": "someone"}, "body": MARKER + " quoted by a human"},
        {"id": 2, "user": {"login": "github-actions[bot]"}, "body": "#### :tropical_drink: `preview` on dev"},
        {"id": 3, "user": {"login": "github-actions[bot]"}, "body": MARKER + "\nold"},
    ]
    state = post_comment(tmp_path, artifact, comments=others)
    assert state["created"] == []
    (updated,) = state["updated"]
    assert updated["comment_id"] == 3 and updated["body"] == body


def test_comment_says_so_when_nothing_changed(tmp_path: Path):
    artifact = write_artifact(tmp_path / "a", "")
    (created,) = post_comment(tmp_path, artifact)["created"]
    assert "No differences" in created["body"] and "```" not in created["body"]


def test_comment_refuses_a_forged_or_stale_artifact(tmp_path: Path):
    artifact = write_artifact(tmp_path / "a", "diff -ruN base/x head/x\n")
    stale = post_comment(tmp_path, artifact, pr_head="f" * 40)
    assert stale["created"] == [] and stale["updated"] == [] and stale["notices"]
    for bad in ("42; rm -rf /\n", "-1\n", "", "0\n", "1e3\n"):
        write_artifact(tmp_path / "a", "x\n", pr=bad)
        state = post_comment(tmp_path, artifact)
        assert state["failed"] and state["created"] == [] and "pull" not in state, bad


def test_comment_fences_and_truncates_hostile_diffs(tmp_path: Path):
    evil = "diff -ruN base/x head/x\n+````` closing fence?\n" + "+" + "y" * 99 + "\n"
    artifact = write_artifact(tmp_path / "a", evil * 1000, head="failed")
    (created,) = post_comment(tmp_path, artifact)["created"]
    body = created["body"]
    assert len(body) < 65536
    assert "``````diff\n" in body  # longer than any backtick run inside
    assert "Truncated" in body and "At least" in body
    assert "failed on this pull request" in body


# ------------------------------------------------------ SSH to the Docker host


def ssh_steps(path: Path, job_id: str) -> tuple[dict, dict]:
    job = load(path)["jobs"][job_id]
    setup = next(s for s in steps(job) if s.get("name") == "SSH access to the Docker host")
    stop = next(s for s in steps(job) if s.get("name") == "Stop the SSH agent")
    assert stop["if"] == "always()"
    assert steps(job).index(setup) < steps(job).index(pulumi_steps(job)[0]) < steps(job).index(stop)
    return setup, stop


def test_ssh_agent_holds_the_docker_host_key(tmp_path: Path):
    assert shutil.which("ssh-agent") and shutil.which("ssh-keygen"), "openssh-client is needed (scripts/test.sh installs it)"
    setup, stop = ssh_steps(DEPLOY, "up")
    assert setup["env"]["DOCKER_HOST_SSH_KEY"] == "${{ secrets.DOCKER_HOST_SSH_KEY }}"
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env = github_env(tmp_path)
    env["DOCKER_HOST_SSH_KEY"] = key.read_text()
    env["DOCKER_HOST_KNOWN_HOSTS"] = "docker.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"
    result = run_script(setup["run"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    exported = read_outputs(env["GITHUB_ENV"])
    agent = {**env, **exported}
    try:
        listed = subprocess.run(["ssh-add", "-l"], env=agent, capture_output=True, text=True)
        assert listed.returncode == 0 and "ED25519" in listed.stdout, listed
        known = (Path(env["HOME"]) / ".ssh" / "known_hosts").read_text()
        assert known == env["DOCKER_HOST_KNOWN_HOSTS"] + "\n"
        assert not any(env["DOCKER_HOST_SSH_KEY"] in p.read_text(errors="ignore")
                       for p in Path(env["HOME"]).rglob("*") if p.is_file()), "key written to disk"
    finally:
        result = run_script(stop["run"], tmp_path, agent)
    assert result.returncode == 0, result.stderr
    assert subprocess.run(["ssh-add", "-l"], env=agent, capture_output=True).returncode == 2  # agent gone


def test_ssh_setup_is_optional_but_needs_known_hosts(tmp_path: Path):
    setup, stop = ssh_steps(DEPLOY, "up")
    env = github_env(tmp_path)
    env.update(DOCKER_HOST_SSH_KEY="", DOCKER_HOST_KNOWN_HOSTS="")
    assert run_script(setup["run"], tmp_path, env).returncode == 0
    assert Path(env["GITHUB_ENV"]).read_text() == ""
    assert run_script(stop["run"], tmp_path, env).returncode == 0
    env["DOCKER_HOST_SSH_KEY"] = "not empty"
    result = run_script(setup["run"], tmp_path, env)
    assert result.returncode != 0 and "DOCKER_HOST_KNOWN_HOSTS" in result.stdout


# ------------------------------------------------- who may use which secret
#
# A same-repository pull request runs its own copy of the workflows, so the
# files alone cannot keep a secret from it: GitHub can. Repository secrets
# reach every branch; a secret of an environment that admits only the default
# branch reaches only the deploys. These tests hold the files to that design:
# jobs outside an environment use no secret, the Docker host key is used only
# by the default-branch deploy, and the preview neither holds nor needs it.

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)
SECRET_REF = re.compile(r"\bsecrets\.([A-Za-z_][A-Za-z0-9_]*)")
VAR_REF = re.compile(r"\bvars\.([A-Za-z_][A-Za-z0-9_]*)")
# `secrets.X != ''` asks only whether X is set: the value never leaves GitHub.
PRESENCE_TEST = re.compile(r"^\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*!=\s*''\s*$")
DEPLOY_ONLY_SECRETS = {"DOCKER_HOST_SSH_KEY"}


def job_expressions(job: dict) -> list[str]:
    """The body of every `${{ }}` in a job (keys, values, scripts)."""
    return EXPRESSION.findall(json.dumps(job))


def secrets_used(job: dict) -> set[str]:
    """Secrets whose values the job can read; the automatic token counts as GITHUB_TOKEN."""
    used = set()
    for body in job_expressions(job):
        if PRESENCE_TEST.match(body):
            continue
        used |= set(SECRET_REF.findall(body))
        if re.search(r"\bgithub\.token\b", body):
            used.add("GITHUB_TOKEN")
    return used


def secrets_tested_for_presence(job: dict) -> set[str]:
    return {m[1] for body in job_expressions(job) if (m := PRESENCE_TEST.match(body))}


def variables_used(job: dict) -> set[str]:
    return {name for body in job_expressions(job) for name in VAR_REF.findall(body)}


def test_the_secret_scan_sees_values_and_presence_tests_apart():
    job = {
        "runs-on": "${{ vars.X || 'y' }}",
        "steps": [{"env": {"A": "${{ secrets.A }}", "B": "${{ secrets.B != '' }}", "T": "${{ github.token }}"},
                   "with": {"c": "${{ secrets.C && format('{0}', secrets.D) }}"}}],
    }
    assert secrets_used(job) == {"A", "C", "D", "GITHUB_TOKEN"}
    assert secrets_tested_for_presence(job) == {"B"}
    assert variables_used(job) == {"X"}


def test_jobs_outside_an_environment_use_no_secret_but_the_github_token():
    """So no workflow needs a repository secret, which every branch could read."""
    for name, job_id, job in all_jobs():
        if "environment" not in job:
            assert secrets_used(job) <= {"GITHUB_TOKEN"}, f"{name}/{job_id} uses {secrets_used(job)}"
            assert not secrets_tested_for_presence(job), f"{name}/{job_id}"


def test_deploy_only_secrets_are_used_only_by_the_default_branch_deploy():
    users = {(name, job_id) for name, job_id, job in all_jobs() if secrets_used(job) & DEPLOY_ONLY_SECRETS}
    assert users == {("deploy.yml", "up")}
    workflow = load(DEPLOY)
    assert set(triggers(workflow)) == {"push", "workflow_dispatch"}
    assert triggers(workflow)["push"]["branches"] == ["main"]
    up = workflow["jobs"]["up"]
    # Bound to the stack's environment, whose branch rule keeps other branches out.
    assert up["environment"] == "${{ matrix.stack }}"
    assert up["needs"] == "stacks"
    assert "github.event.repository.default_branch" in workflow["jobs"]["stacks"]["if"]


def test_the_preview_holds_no_docker_host_credential():
    job = load(PREVIEW)["jobs"]["pulumi-preview"]
    assert not secrets_used(job) & DEPLOY_ONLY_SECRETS
    assert "DOCKER_HOST_KNOWN_HOSTS" not in json.dumps(job)
    for step in steps(job):
        assert not re.search(r"\bssh-(agent|add)\b", step.get("run", "")), step.get("name")
        assert "SSH_AUTH_SOCK" not in json.dumps(step.get("env", {}))
    # Its own environment, named literally: no matrix value can pick a deploy environment.
    assert job["environment"] == "preview"
    # What a preview needs: read the state, decrypt the stacks' secrets, comment.
    assert secrets_used(job) == {
        "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_ACCESS_TOKEN",
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN",
    }


def test_the_preview_never_runs_on_the_deploy_runner():
    job = load(PREVIEW)["jobs"]["pulumi-preview"]
    assert "PULUMI_RUNS_ON" not in variables_used(job), "pull-request code on the runner that deploys"
    assert job["runs-on"] == "${{ vars.PULUMI_PREVIEW_RUNS_ON || 'ubuntu-latest' }}"
    assert "vars.PULUMI_RUNS_ON" in load(DEPLOY)["jobs"]["up"]["runs-on"]


def test_the_preview_never_refreshes():
    """A refresh reads every container back from the Docker host: the one call that needs its key."""
    (pulumi,) = pulumi_steps(load(PREVIEW)["jobs"]["pulumi-preview"])
    assert pulumi["with"]["refresh"] is False
    assert not re.search(r"--refresh\b", json.dumps(pulumi)), "no refresh through extra options either"
    # `options: refresh: always` in Pulumi.yaml would refresh on every preview.
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert "refresh" not in (project.get("options") or {})


def preview_guard() -> dict:
    job = load(PREVIEW)["jobs"]["pulumi-preview"]
    (guard,) = [s for s in steps(job) if "SSH_KEY_IN_REACH" in s.get("env", {})]
    return guard


def test_the_preview_checks_only_whether_the_docker_host_key_is_in_reach():
    job = load(PREVIEW)["jobs"]["pulumi-preview"]
    guard = preview_guard()
    assert guard["env"] == {"SSH_KEY_IN_REACH": "${{ secrets.DOCKER_HOST_SSH_KEY != '' }}"}
    assert secrets_tested_for_presence(job) == {"DOCKER_HOST_SSH_KEY"}
    # Before the pull request's code is even checked out.
    assert steps(job).index(guard) == 0


@pytest.mark.parametrize("in_reach,refused", [("true", True), ("false", False)])
def test_the_preview_refuses_a_docker_host_key_in_its_reach(in_reach: str, refused: bool, tmp_path: Path):
    env = github_env(tmp_path)
    env["SSH_KEY_IN_REACH"] = in_reach
    result = run_script(preview_guard()["run"], tmp_path, env)
    assert (result.returncode != 0) is refused, result.stdout + result.stderr
    assert ("::error::DOCKER_HOST_SSH_KEY is visible to pull-request previews" in result.stdout) is refused


def test_fork_pull_requests_get_no_secrets():
    for path in WORKFLOW_FILES:
        assert "pull_request_target" not in triggers(load(path)), f"{path.name} would run fork code with secrets"
    for job_id, job in load(PREVIEW)["jobs"].items():
        if secrets_used(job) - {"GITHUB_TOKEN"} or secrets_tested_for_presence(job):
            condition = " ".join(job.get("if", "").split())
            assert "github.event.pull_request.head.repo.full_name == github.repository" in condition, job_id


# ---------------------------------------------- docs/ci.md says who sees what

CI_DOC = ROOT / "docs" / "ci.md"


def documented_jobs() -> dict[tuple[str, str], dict]:
    """The rows of docs/ci.md's "Which job sees which secret" table, by (workflow, job)."""
    text = CI_DOC.read_text(encoding="utf-8")
    start = text.index("## 6. Which job sees which secret, and why")
    end = text.index("\n## ", start + 1)
    rows = {}
    for line in text[start:end].splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 6, line
        job, environment, secrets, variables, token, why = cells

        def names(cell: str) -> set[str]:
            return set(re.findall(r"`([^`]+)`", cell)) if cell != "none" else set()

        workflow, job_id = re.findall(r"`([^`]+)`", job)
        permissions = {}
        for grant in names(token):
            scope, _, level = grant.partition(": ")
            permissions[scope] = level
        (env,) = names(environment) or {None}
        rows[(workflow, job_id)] = {
            "environment": env, "secrets": names(secrets), "variables": names(variables),
            "permissions": permissions, "why": why,
        }
    return rows


def test_the_docs_say_which_secret_each_job_sees_and_why():
    rows = documented_jobs()
    assert set(rows) == {(name, job_id) for name, job_id, _ in all_jobs()}, "one row per job, no more"
    for name, job_id, job in all_jobs():
        row = rows[(name, job_id)]
        where = f"docs/ci.md, row {name} › {job_id}"
        environment = {"<stack>": "${{ matrix.stack }}"}.get(row["environment"], row["environment"])
        assert job.get("environment") == environment, where
        assert row["secrets"] == secrets_used(job) - {"GITHUB_TOKEN"}, where
        assert row["variables"] == variables_used(job), where
        assert row["permissions"] == job["permissions"], where
        assert len(row["why"]) > 20, f"{where}: say why"
    # The key-presence check is the one secret a job touches without its value: the docs say so.
    assert "DOCKER_HOST_SSH_KEY" in rows[("preview.yml", "pulumi-preview")]["why"]


def test_the_docs_keep_the_docker_host_key_out_of_the_preview_environment():
    text = CI_DOC.read_text(encoding="utf-8")
    (row,) = [line for line in text.splitlines() if line.startswith("| `DOCKER_HOST_SSH_KEY` |")]
    preview_cell = row.strip().strip("|").split(" | ")[2]
    assert preview_cell.startswith("**never**"), row
    assert "no repository secrets" in text.lower()
