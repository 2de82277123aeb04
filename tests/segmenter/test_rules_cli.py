"""`segmenter rules validate`: output and exit codes."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from click.testing import CliRunner

from segmenter.cli import main

RETAIL = str(resources.files("rules").joinpath("examples", "retail.yaml"))
MINIMAL = str(resources.files("rules").joinpath("examples", "minimal.yaml"))

BAD = """\
version: 1
name: bad
settings:
  currency: PLN
segments:
  - id: vip
    when: purchase_amout(180d) >= 5000
  - id: churn
    colour: "#ff0000"
    when: days_since_last_purchase() > 60
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["rules", "validate", *args])
    return result.exit_code, result.stdout, result.stderr


def test_valid_files() -> None:
    code, out, err = run(RETAIL, MINIMAL)
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{RETAIL}: OK: 'retail-default', ")
    assert "1 group," in lines[0]
    assert "rules_version sha256:" in lines[0]
    assert lines[1].startswith(f"{MINIMAL}: OK: 'minimal', 3 segments, 1 group, ")


def test_invalid_file_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    code, out, err = run(str(path))
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        f"{path}:7:11: unknown function 'purchase_amout' (did you mean 'purchase_amount'?)",
        f"{path}:9:5: unknown key 'colour' in a segment (known keys: id, label, description, "
        "color, icon, group, when, exit_when, min_dwell, actions, control, control_salt, "
        "outcome) "
        "(did you mean 'color'?)",
        f"{path}: 2 problems",
    ]


def test_mixed_files_exit_1_and_report_both(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    code, out, err = run(MINIMAL, str(path))
    assert code == 1
    assert out.startswith(f"{MINIMAL}: OK")
    assert f"{path}:7:11: unknown function" in err


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    code, _, err = run(str(path))
    assert code == 1
    assert err.startswith(f"{path}:1:1: cannot read the rule file")


def test_yaml_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nname: [x\n")
    code, _, err = run(str(path))
    assert code == 1
    assert err.startswith(f"{path}:3:1: invalid YAML")


def test_needs_a_file() -> None:
    code, _, err = run()
    assert code == 2
    assert "Missing argument" in err
