"""Every rule names an existing, fully pinned conda environment whose pins equal the project's."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)$")


def project_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        req for group in project["optional-dependencies"].values() for req in group
    ]
    pins = {}
    for requirement in requirements:
        match = PIN.match(requirement)
        assert match, f"pyproject.toml: {requirement!r} is not pinned with =="
        pins[match.group(1).lower()] = match.group(2)
    return pins


def rule_conda_envs() -> dict[str, Path]:
    """rule name -> environment file, read from the rule files."""
    envs = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        rule = None
        lines = smk.read_text().splitlines()
        for i, line in enumerate(lines):
            head = re.match(r"^(?:rule|checkpoint) (\w+):|^use rule \w+ as (\w+) with:", line)
            if head:
                rule = head.group(1) or head.group(2)
            elif line.strip() == "conda:" and rule is not None:
                envs[rule] = (smk.parent / lines[i + 1].strip().strip('"')).resolve()
    return envs


def test_every_rule_with_a_job_names_an_existing_env():
    from snakemake.api import SnakemakeApi  # noqa: F401  (import proves snakemake is there)

    envs = rule_conda_envs()
    text = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    job_rules = set(re.findall(r"^rule (\w+):", text, flags=re.M)) - {"all", "figures"}
    job_rules |= set(re.findall(r"^use rule \w+ as (\w+) with:", text, flags=re.M))
    missing = sorted(job_rules - set(envs))
    assert not missing, f"rules without conda: {missing}"
    for rule, path in envs.items():
        assert path.is_file(), f"rule {rule}: environment {path} does not exist"
        assert path.parent == ROOT / "envs"


@pytest.mark.parametrize("env_file", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_is_fully_pinned_and_agrees_with_pyproject(env_file):
    pins = project_pins()
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"][0] == "conda-forge"
    pip_deps = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_deps += dep["pip"]
        else:
            assert re.match(r"^[\w\-]+=\d[\w.]*$", dep), f"{env_file.name}: {dep!r} is not pinned"
    assert pip_deps, f"{env_file.name} has no pip section"
    for dep in pip_deps:
        match = PIN.match(dep)
        assert match, f"{env_file.name}: {dep!r} is not pinned with =="
        name, version = match.group(1).lower(), match.group(2)
        assert name in pins, f"{env_file.name}: {name} is not a project dependency"
        assert pins[name] == version, (
            f"{env_file.name}: {name}=={version} but pyproject.toml pins {pins[name]}"
        )


def test_torch_is_in_every_env_that_imports_the_models():
    for name in ("data", "md", "train", "evaluate"):
        env = yaml.safe_load((ROOT / "envs" / f"{name}.yaml").read_text())
        pip_deps = [d for dep in env["dependencies"] if isinstance(dep, dict) for d in dep["pip"]]
        assert any(d.startswith("torch==") for d in pip_deps), name


def test_main_install_has_what_the_report_needs():
    """The README's main command installs without the test extras; ``snakemake --report`` needs
    pygments, which snakemake itself does not depend on (pytest pulls it into the test venv, so
    only this check catches its absence)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {PIN.match(req).group(1).lower() for req in project["dependencies"]}
    assert {"snakemake", "pygments", "jsonschema", "pyyaml"} <= names
    report_env = yaml.safe_load((ROOT / "envs" / "report.yaml").read_text())
    pip_pins = next(d["pip"] for d in report_env["dependencies"] if isinstance(d, dict))
    assert {"snakemake", "pygments"} <= {PIN.match(p).group(1).lower() for p in pip_pins}
