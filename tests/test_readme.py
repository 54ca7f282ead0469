"""The README's test command is the one CI runs."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci_command = REPO.joinpath(".ci", "run").read_text().strip().splitlines()[-1]
    readme = REPO.joinpath("README.md").read_text()
    block = readme.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    readme_command = next(line for line in block.splitlines() if line.strip() and not line.startswith("```"))
    assert ci_command == readme_command.strip()
