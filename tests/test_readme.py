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
def test_readme_python_blocks_run_in_order(capsys):
    namespace: dict = {}
    for index, block in enumerate(python_blocks()):
        exec(compile(block, f"README.md block {index}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "digits-py@1 validation accuracy" in out and "accuracy on all digits" in out
    assert "digits-py@2 digits-py@3 INT8 accuracy" in out and "CPUExecutionProvider 7" in out
