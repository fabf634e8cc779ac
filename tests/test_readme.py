"""The README's test command is the one .ci/run executes, word for word."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _test_command_in_readme() -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    cmds = [ln.strip() for ln in lines if ln.strip().startswith("pip install torch==") and "pytest" in ln]
    assert len(cmds) == 1, f"expected one test command in the README, found {cmds}"
    return cmds[0]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _test_command_in_readme() in [ln.strip() for ln in ci]


def test_readme_main_command_runs_the_default_sweep():
    text = (ROOT / "README.md").read_text()
    assert "pip install torch==2.13.0 && pip install -e . && snakemake --cores 2 all" in text
