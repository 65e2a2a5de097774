"""``cohort serve`` / ``cohort join`` as commands: registered under both names, and a bad job
file is one line naming the TOML field, exit 2, before anything listens (the end-to-end run is
tests/test_three_hospitals.py, marked slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohort.registry import COMMANDS, PLANNED
from coordinator.provision import parse_consortium, provision

ROOT = Path(__file__).resolve().parents[1]

CONSORTIUM = """[consortium]
name = "t"
[admin]
name = "a"
[coordinator]
hosts = ["127.0.0.1"]
[[sites]]
name = "site-1"
[[sites]]
name = "site-2"
"""


def test_serve_and_join_are_commands_not_plans() -> None:
    built = {(e.name, e.role) for e in COMMANDS}
    assert {("serve", "coordinator"), ("join", "clients")} <= built
    assert not {"serve", "join"} & {e.name for e in PLANNED}


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "kits"
    provision(parse_consortium(CONSORTIUM), out)
    return out


def _run(capsys, role: str, *args: str):
    """The command in process, as ``python -m <role>`` runs it: (exit code, stderr)."""
    from cohort.registry import role_main

    code = role_main(role, list(args), summary="")
    return code, capsys.readouterr().err


@pytest.mark.parametrize("text, field", [
    ('[data]\ndataset = "breast_cancer"\n[privacy]\nmode = "loud"\n', "privacy.mode"),
    ('[data]\ndataset = "breast_cancer"\n[model]\nkind = "resnet"\n', "model.kind"),
    ('[job]\nrounds = 0\n[data]\ndataset = "breast_cancer"\n', "job.rounds"),
])
def test_a_bad_job_file_is_one_line_naming_the_field(kits, tmp_path, capsys, text,
                                                     field) -> None:
    job = tmp_path / "job.toml"
    job.write_text(text)
    code, err = _run(capsys, "coordinator", "serve", "--kit", str(kits / "coordinator"),
                     "--job", str(job), "--out", str(tmp_path / "out"), "--port", "0")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{job}: {field}:" in lines[0]
    assert not (tmp_path / "out").exists()


def test_join_refuses_a_folder_that_is_not_a_site_kit(kits, capsys) -> None:
    code, err = _run(capsys, "clients", "join", "--kit", str(kits / "coordinator"), "--data",
                     "builtin:breast_cancer:1/2")
    assert code == 2 and "not a site kit" in err
