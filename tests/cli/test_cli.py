"""The CLI as a user runs it: subprocesses, exit codes, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import write_digits_folder

SAMPAN = [sys.executable, "-m", "sampan.cli.main"]
FAST = ["--arch", "small_cnn_tiny", "--input-size", "16", "--batch-size", "32", "--device", "cpu"]


def run(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "SAMPAN_HOME": str(home), "SAMPAN_QUIET": "1", "COLUMNS": "200"}
    proc = subprocess.run([*SAMPAN, *args], capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def test_help_does_not_import_torch():
    code = (
        "import sys; from sampan.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "import sampan; assert 'torch' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "predict" in proc.stdout


@pytest.mark.slow
def test_train_eval_predict_packages(tmp_path: Path, digits_dir: Path, digits_holdout: Path):
    home = tmp_path / "home"
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 9\nseed: 3\npatience: 0\n")
    out = run(
        "train",
        str(digits_dir),
        "--name",
        "digits",
        "-c",
        str(config),
        "--epochs",
        "2",
        *FAST,
        home=home,
    ).stdout
    assert "Package digits@1 written to" in out
    manifest = json.loads(run("packages", "show", "digits", "--json", home=home).stdout)
    assert manifest["training"]["config"]["epochs"] == 2  # the flag beat the file
    assert manifest["training"]["seed"] == 3  # the file beat the default
    plot = tmp_path / "cm.png"
    out = run("eval", "digits@1", str(digits_holdout), "--plot", str(plot), home=home).stdout
    assert "accuracy" in out and "Confusion matrix" in out and plot.is_file()
    metrics = json.loads(
        run("eval", "digits", str(digits_holdout), "--json", "--plot", str(plot), home=home).stdout
    )
    assert metrics["num_samples"] == 50
    lines = run("predict", "digits@latest", str(digits_holdout / "7"), "--json", home=home).stdout
    assert len(lines.splitlines()) == 5 and "top_k" in json.loads(lines.splitlines()[0])
    assert "digits@1" in run("packages", "list", home=home).stdout
    assert "deleted digits@1" in run("packages", "rm", "digits@1", "--yes", home=home).stdout
    assert "No packages" in run("packages", "list", home=home).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "/no/such/folder", "--name", "x"], "does not exist"),
        (["train", ".", "--name", "x", "--arch", "resnet81"], "Did you mean: resnet18"),
        (["train", ".", "--name", "x", "--epochs", "0"], "epochs must be > 0"),
        (["predict", "nothing", "x.png"], "No package named 'nothing'"),
        (["packages", "show", "../etc"], "Invalid package name"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path: Path, args, message):
    proc = run(*args, home=tmp_path / "home", check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_corrupted_package_is_a_clear_error(tmp_path: Path):
    from sampan.store import Store

    home = tmp_path / "home"
    store = Store(home)
    package = store.write(
        "p",
        {
            "task": "image-classification",
            "architecture": {"name": "small_cnn", "config": {}},
            "labels": ["a"],
            "preprocessing": {},
        },
        lambda d: (d / "weights.safetensors").write_bytes(b"0123456789"),
    )
    weights = package.path / "weights.safetensors"
    weights.write_bytes(b"0123456788")
    proc = run("predict", "p", "x.png", home=home, check=False)
    assert proc.returncode != 0 and "weights.safetensors is corrupt" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path: Path):
    data = write_digits_folder(tmp_path / "data", per_class=30)
    args = ["train", str(data), "--epochs", "8", "--patience", "0", "--augment", "shift", *FAST]
    run(*args, "--name", "straight", home=tmp_path / "a")
    home = tmp_path / "b"
    env = {**os.environ, "SAMPAN_HOME": str(home), "SAMPAN_QUIET": "1"}
    proc = subprocess.Popen(
        [*SAMPAN, *args, "--name", "cut"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = home / "runs" / "cut" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    seen = 0.0
    # Kill it mid-way: after the checkpoint of epoch 2 or so is written, before the end.
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoint.exists():
            if seen and checkpoint.stat().st_mtime != seen:
                proc.send_signal(signal.SIGKILL)
                break
            seen = seen or checkpoint.stat().st_mtime
        time.sleep(0.005)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (home / "packages" / "cut").exists() or not any(
        p.name.isdigit() for p in (home / "packages" / "cut").iterdir()
    )
    run(*args, "--name", "cut", "--resume", home=home)
    straight = load_file(
        str(tmp_path / "a" / "packages" / "straight" / "1" / "weights.safetensors")
    )
    resumed = load_file(str(home / "packages" / "cut" / "1" / "weights.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert np.array_equal(straight[key], resumed[key]), key


@pytest.mark.slow
def test_devices_export_compress_bench(tmp_path: Path, trained):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(trained[0], home)
    assert "cpu" in run("devices", home=home).stdout
    out = run("export", "digits", "--format", "onnx", home=home).stdout
    assert "top-1 agreement 1.0000" in out and "Package digits@2 (onnx)" in out
    out = run("compress", "digits@2", "--int8", "--max-drop", "5", home=home).stdout
    assert "accuracy:" in out and "Package digits@3 (INT8)" in out
    report = tmp_path / "bench.json"
    out = run(
        "bench", "digits@2", "--batch", "1,2", "--seconds", "0.05", "--out", str(report), home=home
    ).stdout
    assert "fastest:" in out and json.loads(report.read_text())["best"]["backend"]
    assert json.loads((home / "tuning.json").read_text())
    proc = run("bench", "digits@3", "--backends", "torch", home=home, check=False)
    assert proc.returncode != 0 and "cannot run on torch" in proc.stderr
    proc = run("predict", "digits@3", "x.png", "--backend", "tpu", home=home, check=False)
    assert proc.returncode != 0 and "Unknown backend 'tpu'" in proc.stderr


def test_usage_errors_print_one_message_and_exit_2(tmp_path: Path):
    for args, message in (
        (("nosuch",), "No such command 'nosuch'"),
        (("train", "--epochs", "x"), "Invalid value for '--epochs'"),
    ):
        proc = run(*args, home=tmp_path, check=False)
        assert proc.returncode == 2 and message in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_time_series_from_the_command_line(tmp_path: Path):
    pytest.importorskip("statsmodels", reason="the dev extras install it")
    home = tmp_path / "home"
    path = run("datasets", "series", "co2", home=home).stdout.strip().splitlines()[-1]
    out = run(
        "train",
        path,
        "--task",
        "ts-forecast",
        "--name",
        "co2",
        "--window",
        "104",
        "--horizon",
        "13",
        "--epochs",
        "2",
        "--device",
        "cpu",
        home=home,
    ).stdout
    assert "seasonal_naive_mase" in out and "Package co2@1 written to" in out
    out = run("eval", "co2", "--data", path, home=home).stdout
    assert "skill" in out and "windows" in out
    assert "ts-forecast" in run("models", "--task", "ts-forecast", home=home).stdout
    proc = run(
        "train",
        path,
        "--task",
        "ts-forecast",
        "--name",
        "x",
        "--window",
        "10",
        home=home,
        check=False,
    )
    assert proc.returncode != 0 and "longer than the window" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_series_column_from_the_command_line(tmp_path: Path):
    """--series-column names a numeric id column (never guessed); evaluating a file with a
    series the model never saw is one line, no traceback."""
    from tests.tasks.test_ts_series import machines_frame

    home = tmp_path / "home"
    frame = machines_frame(300)
    frame["unit"] = frame.pop("machine").str[-1].astype(int)  # units 1, 2, 3
    frame.to_csv(tmp_path / "plant.csv", index=False)
    common = ["--task", "ts-forecast", "--window", "24", "--horizon", "6", "--device", "cpu"]
    args = ["train", str(tmp_path / "plant.csv"), "--name", "plant", *common, "--epochs", "1"]
    run(*args, "--series-column", "unit", home=home)
    manifest = json.loads((home / "packages" / "plant" / "1" / "manifest.json").read_text())
    contract = manifest["preprocessing"]
    assert contract["series_column"] == "unit" and sorted(contract["series"]) == ["1", "2", "3"]
    assert contract["columns"] == ["reading"]  # the id column is not a reading
    frame.loc[frame["unit"] == 3, "unit"] = 7
    frame.to_csv(tmp_path / "other.csv", index=False)
    proc = run("eval", "plant", "--data", str(tmp_path / "other.csv"), home=home, check=False)
    assert proc.returncode != 0 and "Series '7' was not seen in training" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
