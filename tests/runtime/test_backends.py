"""Contract tests over every registered backend: same package, same inputs, same top-1."""

import subprocess
import sys

import numpy as np
import pytest

import sampan
import sampan.runtime.backends
from sampan.errors import DataError, NotFoundError, PackageError
from sampan.runtime.engine import BACKENDS, available_backends, create_engine
from sampan.store import Store

# Stated tolerances: fp32 backends agree to 1e-4 on logits; INT8 on top-1 for >= 95% of inputs.
FP32_ATOL = 1e-4


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_backend_gives_the_same_top1(backend, exported, digits_holdout):
    home, onnx_ref, _ = exported
    files = sorted(digits_holdout.glob("*/*.png"))
    reference = sampan.load(onnx_ref, backend="torch", store=Store(home)).outputs(files)
    outputs = sampan.load(onnx_ref, backend=backend, store=Store(home)).outputs(files)
    assert np.array_equal(outputs.argmax(1), reference.argmax(1))
    assert np.abs(outputs - reference).max() < FP32_ATOL


def test_torch_amp_runs_in_half_precision_and_keeps_top1(exported, digits_holdout):
    home, onnx_ref, _ = exported
    files = sorted(digits_holdout.glob("*/*.png"))
    fp32 = sampan.load(onnx_ref, backend="torch", device="cpu", store=Store(home))
    amp = sampan.load(onnx_ref, backend="torch", device="cpu", amp=True, store=Store(home))
    reference, half = fp32.outputs(files), amp.outputs(files)
    assert half.dtype == np.float32  # logits come back in fp32 whatever ran inside
    assert np.mean(half.argmax(1) == reference.argmax(1)) >= 0.95
    # bf16 autocast really ran: the logits differ from fp32 beyond fp32 rounding.
    assert np.abs(half - reference).max() > FP32_ATOL


def test_int8_agrees_with_fp32_on_top1(exported, digits_holdout):
    home, onnx_ref, int8_ref = exported
    files = sorted(digits_holdout.glob("*/*.png"))
    fp32 = sampan.load(onnx_ref, backend="onnxruntime", store=Store(home)).outputs(files)
    int8 = sampan.load(int8_ref, backend="onnxruntime", store=Store(home)).outputs(files)
    assert np.mean(fp32.argmax(1) == int8.argmax(1)) >= 0.95


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_bad_batches_are_clear_errors(backend, exported):
    home, onnx_ref, _ = exported
    engine = create_engine(Store(home).open(onnx_ref), backend=backend, device="cpu")
    good = np.zeros((2, 1, 16, 16), dtype=np.float32)
    assert engine.predict(good).shape == (2, 10)
    cases = [
        (good.astype(np.float64), "dtype is float64"),
        (np.zeros((2, 3, 16, 16), np.float32), r"shape is \(2, 3, 16, 16\)"),
        (np.zeros((0, 1, 16, 16), np.float32), "empty"),
        ([[1.0]], "numpy array"),
    ]
    for batch, message in cases:
        with pytest.raises(DataError, match=message):
            engine.predict(batch)


def test_onnxruntime_runs_one_row_batches_on_a_spinning_session_when_asked(exported, monkeypatch):
    from sampan.runtime.backends import onnxruntime_backend

    home, onnx_ref, _ = exported
    package = Store(home).open(onnx_ref)
    engine = create_engine(
        package, backend="onnxruntime", device="cpu", threads=2, spin=False, lone_spin=True
    )
    spinning = "session.intra_op.allow_spinning"
    assert engine.session.get_session_options().get_session_config_entry(spinning) == "0"
    assert engine.lone_session.get_session_options().get_session_config_entry(spinning) == "1"
    calls = {"lone": 0, "main": 0}
    for name, session in (("lone", engine.lone_session), ("main", engine.session)):
        run = session.run

        def counted(*args, _run=run, _name=name, **kwargs):
            calls[_name] += 1
            return _run(*args, **kwargs)

        monkeypatch.setattr(session, "run", counted)
    batch = np.random.default_rng(0).standard_normal((3, 1, 16, 16)).astype(np.float32)
    together = engine.predict(batch)
    alone = np.concatenate([engine.predict(batch[i : i + 1]) for i in range(3)])
    assert calls == {"lone": 3, "main": 1}
    assert np.abs(together - alone).max() < FP32_ATOL  # the same model either way

    # No second session where it could not help or would cost too much.
    def lone(**options):
        return create_engine(package, backend="onnxruntime", device="cpu", **options).lone_session

    assert lone(threads=2, spin=False) is None  # not asked for
    assert lone(threads=2, spin=True, lone_spin=True) is None  # every run spins already
    assert lone(threads=1, spin=False, lone_spin=True) is None  # no worker threads to wake
    monkeypatch.setattr(onnxruntime_backend, "LONE_SESSION_MAX_BYTES", 1024)
    assert lone(threads=2, spin=False, lone_spin=True) is None  # too big to hold twice


def test_missing_export_unknown_backend_and_corrupt_onnx(exported, trained):
    home, onnx_ref, _ = exported
    store = Store(home)
    with pytest.raises(PackageError, match="sampan export"):
        create_engine(store.open(trained[1]), backend="onnxruntime")
    with pytest.raises(NotFoundError, match=r"available: .*onnxruntime"):
        create_engine(store.open(onnx_ref), backend="tensorflow")
    with pytest.raises(PackageError, match="only an ONNX model"):
        create_engine(store.open(exported[2]), backend="torch")


def test_corrupt_onnx_file_is_a_package_error(exported, tmp_path):
    import shutil

    home, onnx_ref, _ = exported
    copy = tmp_path / "pkg"
    shutil.copytree(Store(home).path_of(onnx_ref), copy)
    (copy / "model.onnx").write_bytes(b"not an onnx model")
    from sampan.package import open_package

    package = open_package(copy, verify=False)  # the checksum would catch it first otherwise
    with pytest.raises(PackageError, match="not a loadable ONNX model"):
        create_engine(package, backend="onnxruntime")
    with pytest.raises(PackageError, match=r"model\.onnx is corrupt"):
        open_package(copy)


def test_auto_backend_prefers_onnx_then_the_benchmarked_best(exported, trained):
    from sampan.runtime.tuning import record

    home, onnx_ref, _ = exported
    store = Store(home)
    assert sampan.load(trained[1], store=store).engine.name == "torch"
    assert sampan.load(onnx_ref, store=store).engine.name == "onnxruntime"
    record(store.open(onnx_ref), {"backend": "torch", "threads": None}, home)
    try:
        assert sampan.load(onnx_ref, store=store).engine.name == "torch"
    finally:
        (home / "tuning.json").unlink()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_engines_never_import_torch(backend, exported, digits_holdout):
    home, onnx_ref, _ = exported
    image = sorted(digits_holdout.glob("*/*.png"))[0]
    code = (
        "import sys, sampan\n"
        "from sampan.store import Store\n"
        f"m = sampan.load({onnx_ref!r}, backend={backend!r}, store=Store({str(home)!r}))\n"
        f"print(m.predict([{str(image)!r}])[0]['label'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bench_measures_every_backend_and_records_the_best(exported, tmp_path):
    from sampan.runtime.bench import benchmark, best

    home, onnx_ref, _ = exported
    rows = benchmark(onnx_ref, batches=(1, 4), seconds=0.05, min_runs=3, store=Store(home))
    runnable = available_backends(Store(home).open(onnx_ref))
    assert {"onnxruntime", "torch"} <= set(runnable)
    assert {(r.backend, r.batch) for r in rows} == {(b, n) for b in runnable for n in (1, 4)}
    assert all(r.p99_ms >= r.p50_ms > 0 and r.throughput > 0 for r in rows)
    assert best(rows)["backend"] in runnable
