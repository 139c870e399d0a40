"""HTTPS: `sampan serve --ssl-certfile/--ssl-keyfile` and `sampan loadtest --cacert`, with a
certificate a test CA (trustme) signed for 127.0.0.1; and the flags' one-line errors."""

from __future__ import annotations

import contextlib
import signal
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from sampan.errors import ConfigError, SampanError
from tests.serving.conftest import free_port, serve_process
from tests.serving.test_server import b64


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """ca.pem, and a server certificate for 127.0.0.1 (cert.pem, key.pem) that it signed;
    other.key is the key of another certificate."""
    import trustme

    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(folder / "ca.pem")
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(folder / "key.pem")
    server.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(folder / "cert.pem", append=True)
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(folder / "other.key")
    return {name: folder / name for name in ("ca.pem", "cert.pem", "key.pem", "other.key")}


@pytest.mark.slow
def test_serve_https_and_load_test_it(serve_home, digits_holdout, certificates, tmp_path):
    from sampan.serving.loadtest import load_test

    home, onnx_ref, _ = serve_home
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with contextlib.ExitStack() as stack:
        log_file = stack.enter_context(log_path.open("w"))
        proc = serve_process(
            home,
            onnx_ref,
            port,
            log_file,
            "--auth",
            "off",
            "--max-body-mb",
            "0.5",
            "--ssl-certfile",
            str(certificates["cert.pem"]),
            "--ssl-keyfile",
            str(certificates["key.pem"]),
        )
        try:
            trusted = ssl.create_default_context(cafile=str(certificates["ca.pem"]))
            client = stack.enter_context(httpx.Client(verify=trusted, timeout=30))
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if client.get(f"{url}/v2/health/ready").is_success:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            image = b64(sorted(digits_holdout.glob("*/*.png"))[0])
            answer = client.post(f"{url}/v1/models/digits:predict", json={"instances": [image]})
            too_big = client.post(f"{url}/v1/models/digits:predict", content=b"x" * 600_000)
            with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port
                httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=5)
            ca = certificates["ca.pem"]
            run = load_test(url, "digits", concurrency=4, requests=40, cacert=ca)
            with pytest.raises(SampanError, match=r"TLS with .* failed.*--cacert"):
                load_test(url, "digits", requests=1)  # the system's CAs do not know ours
        finally:
            # SIGTERM while the client still holds an idle keep-alive TLS connection: the
            # server must not wait out the 30 s TLS close timeout for it (it aborts it)
            stopping = time.monotonic()
            proc.terminate()
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            stopped = time.monotonic()
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 1
    assert too_big.status_code == 413 and "524,288-byte limit" in too_big.json()["error"]
    assert (run.sent, run.ok, run.errors) == (40, 40, {})
    assert f"at {url}" in log_path.read_text()
    assert code in (0, -signal.SIGTERM) and stopped - stopping < 20, (code, stopped - stopping)


def test_bad_tls_and_body_options_are_one_line_each(
    serve_home, certificates, monkeypatch, capsys, tmp_path
):
    from sampan.cli.main import main
    from sampan.serving.loadtest import load_test

    home, onnx_ref, _ = serve_home
    monkeypatch.setenv("SAMPAN_HOME", str(home))
    cert, key = str(certificates["cert.pem"]), str(certificates["key.pem"])
    for flags, message in (
        (["--ssl-certfile", cert], "HTTPS needs both --ssl-certfile and --ssl-keyfile."),
        (["--ssl-certfile", cert, "--ssl-keyfile", "nope.pem"], "--ssl-keyfile nope.pem: no such"),
        (
            ["--ssl-certfile", cert, "--ssl-keyfile", str(certificates["other.key"])],
            "Cannot serve HTTPS with --ssl-certfile",
        ),
        (["--ssl-certfile", key, "--ssl-keyfile", key], "Cannot serve HTTPS with"),
        (["--max-body-mb", "0"], "--max-body-mb must be at least 0.001 (1 KiB) and at most 4096"),
        (["--max-body-mb", "1e-9"], "--max-body-mb must be at least 0.001"),  # 0 bytes
        (["--max-body-mb", "nan"], "--max-body-mb must be at least 0.001"),
        (["--cors-origin", "*", "--cors-origin", "https://a.example/"], "'https://a.example/' is"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(["serve", "--models", onnx_ref, "--auth", "off", *flags])
        assert stop.value.code == ConfigError.exit_code, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (flags, err)
        assert len(err.strip().splitlines()) == 1, err
    with pytest.raises(ConfigError, match="--cacert goes with an https:// address"):
        load_test("http://127.0.0.1:9", "digits", cacert=certificates["ca.pem"])
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="give a PEM file of CA certificates"):
        load_test("https://127.0.0.1:9", "digits", cacert=not_pem)
