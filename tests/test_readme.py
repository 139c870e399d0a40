"""The README's Python blocks run, so the first thing a new user tries works."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks():
    assert python_blocks()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index: int, capsys):
    exec(compile(python_blocks()[index], f"README.md block {index}", "exec"), {})
    out = capsys.readouterr().out
    assert "digits-py@1 validation accuracy" in out and "accuracy on all digits" in out
