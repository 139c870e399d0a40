"""The gate in a real server over HTTP: keys, scopes, limits, metering, safe defaults."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest

from sampan.platform.db import Database
from sampan.platform.gate import build_gate, required_scope
from sampan.platform.keys import Keys
from tests.serving.conftest import RunningServer, free_port


def usage_rows(db):
    from sqlalchemy import select

    from sampan.platform.schema import UsageRecord

    with db.session() as session:
        return [
            (r.app, r.key_prefix, r.model, r.status, r.units, r.version)
            for r in session.scalars(select(UsageRecord).order_by(UsageRecord.id))
        ]


def serve(serve_home, database_url, open=False, refs=None, **settings_):
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    home, onnx_ref, _ = serve_home
    gate = build_gate(Database(database_url), open=open, interval=0.2)
    settings = ServeSettings(backend="onnxruntime", **settings_)
    app = build_app(refs or [onnx_ref], settings, Store(home), extension=gate)
    return RunningServer(app, free_port())


def body(digits_holdout):
    png = sorted(digits_holdout.glob("*/*.png"))[0].read_bytes()
    return {"instances": [base64.b64encode(png).decode()]}


def test_keys_scopes_and_quotas_are_enforced_and_every_call_metered(
    serve_home, database_url, digits_holdout, caplog
):
    with Database(database_url) as db:
        keys = Keys(db)
        keys.create_app("factory")
        key, record = keys.create_key("factory", ["predict:dig*"], quotas=["3/day"])
        other, _ = keys.create_key("factory", ["predict:parts"])
    caplog.set_level(logging.INFO, logger="sampan.access")
    payload = body(digits_holdout)
    with serve(serve_home, database_url) as running:
        url = f"{running.url}/v1/models/digits:predict"
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.post(url, json=payload).status_code == 401
        r = httpx.post(url, json=payload, headers={"Authorization": "Bearer smp_bad"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = httpx.post(url, json=payload, headers={"X-API-Key": other})
        assert r.status_code == 403 and "no scope for predict:digits" in r.json()["error"]
        answers = [httpx.post(url, json=payload, headers=auth) for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert answers[0].headers["x-ratelimit-remaining"] == "2"
        assert int(answers[3].headers["retry-after"]) >= 1
        assert "daily quota" in answers[3].json()["error"]
        # open paths need no key; metadata needs a valid one
        assert httpx.get(f"{running.url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{running.url}/v1/models").status_code == 401
        assert httpx.get(f"{running.url}/v1/models", headers=auth).status_code == 200
        metrics = httpx.get(f"{running.url}/metrics").text
    secret = key.split("_", 2)[2]
    for text in (metrics, caplog.text):
        assert secret not in text and other.split("_", 2)[2] not in text
    with Database(database_url) as db:
        rows = usage_rows(db)
    prefix = record["prefix"]
    assert [r[3] for r in rows if r[1] == prefix] == [200, 200, 200, 429, 429]
    assert [r[3] for r in rows if r[1] == other.split("_")[1]] == [403]
    assert all(r[:3] == ("factory", prefix, "digits") for r in rows if r[1] == prefix)
    assert [r[4] for r in rows if r[3] == 200] == [1, 1, 1]  # units: one image each
    assert len(rows) == 6  # 401s carry no key to bill: counted in metrics, not stored


def test_an_admin_key_loads_models(serve_home, database_url):
    int8_ref = serve_home[2]
    with Database(database_url) as db:
        keys = Keys(db)
        keys.create_app("ops")
        admin, _ = keys.create_key("ops", ["admin"])
        caller, _ = keys.create_key("ops", ["predict:*"])
    with serve(serve_home, database_url) as running:
        url = f"{running.url}/v1/admin/models"
        denied = httpx.post(url, json={"model": int8_ref}, headers={"X-API-Key": caller})
        assert denied.status_code == 403
        r = httpx.post(url, json={"model": int8_ref}, headers={"X-API-Key": admin}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["loaded"]["version"] == int(int8_ref.split("@")[1])
        entries = httpx.get(f"{running.url}/v1/admin/audit", headers={"X-API-Key": admin})
    assert entries.json()["entries"][0]["action"] == "model.load"
    assert entries.json()["entries"][0]["target"] == int8_ref
    assert entries.json()["entries"][0]["actor"] == f"key:{admin.split('_')[1]}"


def test_open_mode_needs_no_key_and_still_meters(serve_home, database_url, digits_holdout):
    with serve(serve_home, database_url, open=True) as running:
        r = httpx.post(f"{running.url}/v1/models/digits:predict", json=body(digits_holdout))
        assert r.status_code == 200
    with Database(database_url) as db:
        assert [row[:4] for row in usage_rows(db)] == [("-", "-", "digits", 200)]


def test_serve_refuses_an_open_public_address(serve_home, monkeypatch, capsys, tmp_path):
    from sampan.cli.main import main
    from sampan.errors import ConfigError

    home, onnx_ref, _ = serve_home
    monkeypatch.setenv("SAMPAN_HOME", str(home))
    monkeypatch.setenv("SAMPAN_DATABASE_URL", f"sqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--models", onnx_ref, "--host", "0.0.0.0"])
    assert stop.value.code == ConfigError.exit_code
    assert "--insecure-open" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--models", onnx_ref, "--host", "0.0.0.0", "--auth", "off"])
    assert stop.value.code == ConfigError.exit_code
    assert "loopback only" in capsys.readouterr().err


def test_paths_map_to_scopes():
    assert required_scope("/v1/models/digits:predict") == "predict:digits"
    assert required_scope("/v1/models/line3:stream") == "predict:line3"
    assert required_scope("/v2/models/digits/infer") == "predict:digits"
    assert required_scope("/v2/models/digits/versions/2/infer") == "predict:digits"
    assert required_scope("/v1/admin/models") == "admin"
    assert required_scope("/v2/repository/models/digits/load") == "admin"
    assert required_scope("/v2/repository/index") == "admin"
    assert required_scope("/v1/models") == "any"
    for open_path in ("/v2/health/ready", "/metrics", "/openapi.json", "/docs", "/"):
        assert required_scope(open_path) is None
    for console_path in ("/console", "/console/models", "/console/static/console.js"):
        assert required_scope(console_path) is None  # the console checks its own sessions
    assert required_scope("/consolex") == "any"


def test_injection_shaped_keys_and_model_names_are_harmless(
    serve_home, database_url, digits_holdout
):
    with Database(database_url) as db:
        keys = Keys(db)
        keys.create_app("tenant")
        key, _ = keys.create_key("tenant", ["predict:*"])
    payload = body(digits_holdout)
    with serve(serve_home, database_url) as running:
        evil_keys = ("' OR '1'='1", "smp_' OR 1=1 --", "smp_aaaaaaaaaaaa_'; DROP TABLE api_keys;--")
        for evil in evil_keys:
            r = httpx.post(
                f"{running.url}/v1/models/digits:predict",
                json=payload,
                headers={"Authorization": f"Bearer {evil}"},
            )
            assert r.status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        for name in ("x' OR 1=1 --", "digits; DROP TABLE usage"):
            r = httpx.post(f"{running.url}/v1/models/{name}:predict", json=payload, headers=auth)
            assert r.status_code == 400 and "is not a model name" in r.json()["error"]
        ok = httpx.post(f"{running.url}/v1/models/digits:predict", json=payload, headers=auth)
        assert ok.status_code == 200
    with Database(database_url) as db:
        rows = usage_rows(db)
        assert [a["name"] for a in Keys(db).list_apps()] == ["tenant"]
    assert sorted(r[3] for r in rows) == [200, 400, 400]
    assert {r[2] for r in rows} == {"digits", "x' OR 1=1 --", "digits; DROP TABLE usage"}


def test_admin_rest_manages_apps_keys_usage_and_audit(serve_home, database_url, digits_holdout):
    with Database(database_url) as db:
        keys = Keys(db)
        keys.create_app("ops")
        admin, admin_record = keys.create_key("ops", ["admin"])
        caller, _ = keys.create_key("ops", ["predict:*"])
    with serve(serve_home, database_url) as running:
        base, auth = f"{running.url}/v1/admin", {"X-API-Key": admin}
        assert httpx.get(f"{base}/apps", headers={"X-API-Key": caller}).status_code == 403
        r = httpx.post(f"{base}/apps", json={"name": "bank"}, headers=auth)
        assert r.status_code == 200 and r.json()["app"]["name"] == "bank"
        assert httpx.post(f"{base}/apps", json={"name": "bank"}, headers=auth).status_code == 400
        r = httpx.post(
            f"{base}/keys",
            json={"app": "bank", "scopes": ["predict:digits"], "quotas": ["1/day"]},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        new_key, prefix = r.json()["key"], r.json()["record"]["prefix"]
        for bad in ({"app": "bank"}, {"app": "bank", "scopes": "predict:*"}, {"app": 3}):
            assert httpx.post(f"{base}/keys", json=bad, headers=auth).status_code == 400
        predict = f"{running.url}/v1/models/digits:predict"
        payload = body(digits_holdout)
        codes = [
            httpx.post(predict, json=payload, headers={"X-API-Key": new_key}).status_code
            for _ in range(2)
        ]
        assert codes == [200, 429]
        listed = httpx.get(f"{base}/keys", params={"app": "bank"}, headers=auth).json()["keys"]
        assert [k["prefix"] for k in listed] == [prefix] and "key" not in listed[0]
        assert httpx.delete(f"{base}/keys/{prefix}", headers=auth).status_code == 200
        assert httpx.post(predict, json=payload, headers={"X-API-Key": new_key}).status_code in (
            401,
            429,  # the key cache may still hold the key for up to 5 s: its quota still holds
        )
        import time

        time.sleep(0.5)  # one metering interval
        usage = httpx.get(f"{base}/usage", params={"by": "app"}, headers=auth).json()["rows"]
        bank = next(row for row in usage if row["app"] == "bank")
        assert bank["ok"] == 1 and bank["refused"] >= 1
        audit = httpx.get(f"{base}/audit", headers=auth).json()["entries"]
    actor = f"key:{admin_record['prefix']}"
    mine = [(e["action"], e["target"]) for e in audit if e["actor"] == actor]
    assert mine == [("key.revoke", prefix), ("key.create", prefix), ("app.create", "bank")]


def test_a_quota_in_task_units_counts_images(serve_home, database_url, digits_holdout):
    with Database(database_url) as db:
        keys = Keys(db)
        keys.create_app("lab")
        key, _ = keys.create_key(
            "lab", ["predict:*"], quotas=["5/day"], quota_units="units", rate="100/s"
        )
    png = sorted(digits_holdout.glob("*/*.png"))[0].read_bytes()
    image = base64.b64encode(png).decode()
    with serve(serve_home, database_url) as running:
        url, auth = f"{running.url}/v1/models/digits:predict", {"X-API-Key": key}
        two = {"instances": [image, image]}
        answers = [httpx.post(url, json=two, headers=auth) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]  # 2 + 2, then 2 > 1 left
        assert answers[1].headers["x-ratelimit-remaining"] == "1"
        assert "units asked" in answers[2].json()["error"]
        assert int(answers[2].headers["retry-after"]) >= 1
        one = httpx.post(url, json={"instances": [image]}, headers=auth)
        assert one.status_code == 200 and one.headers["x-ratelimit-remaining"] == "0"
    with Database(database_url) as db:
        rows = [r for r in usage_rows(db) if r[0] == "lab"]
    assert [(r[3], r[4]) for r in rows] == [(200, 2), (200, 2), (429, 0), (200, 1)]


def test_loadtest_sends_its_key_and_counts_the_quota_refusals(serve_home, database_url):
    from sampan.errors import Unauthorized
    from sampan.serving.loadtest import load_test

    with Database(database_url) as db:
        keys = Keys(db)
        keys.create_app("line-7")
        key, _ = keys.create_key("line-7", ["predict:digits"], quotas=["10/day"])
    with serve(serve_home, database_url) as running:
        with pytest.raises(Unauthorized, match="pass --api-key or set SAMPAN_API_KEY"):
            load_test(running.url, "digits", requests=1)
        report = load_test(running.url, "digits", concurrency=2, requests=12, api_key=key)
    # the checking call and 9 of the run's fit the day's 10; the other 3 are refused
    assert (report.sent, report.ok, report.errors) == (12, 9, {"429": 3})
    assert "daily quota" in report.error_samples["429"]


def test_browser_pages_of_allowed_origins_call_with_keys(serve_home, database_url, digits_holdout):
    with Database(database_url) as db:
        keys = Keys(db)
        keys.create_app("dashboard")
        key, _ = keys.create_key("dashboard", ["predict:digits"])
    page = "https://dash.example.com"
    with serve(serve_home, database_url, cors_origins=(page,)) as running:
        url = f"{running.url}/v1/models/digits:predict"
        asks = {"Access-Control-Request-Method": "POST"}
        # the browser's preflight carries no key: answered before the gate
        preflight = httpx.options(
            url,
            headers={
                "Origin": page,
                **asks,
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        call = httpx.post(
            url,
            json=body(digits_holdout),
            headers={"Origin": page, "Authorization": f"Bearer {key}"},
        )
        no_key = httpx.post(url, json=body(digits_holdout), headers={"Origin": page})
        stranger = httpx.options(url, headers={"Origin": "https://evil.example", **asks})
        stranger_call = httpx.post(
            url, json=body(digits_holdout), headers={"Origin": "https://evil.example"}
        )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == page
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == page
    assert "x-request-id" in call.headers["access-control-expose-headers"].lower()
    # the key is still needed, and the 401 is readable by the page
    assert no_key.status_code == 401 and no_key.headers["access-control-allow-origin"] == page
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers
    assert "access-control-allow-origin" not in stranger_call.headers


def test_cors_origins_are_checked_to_be_origins():
    from sampan.errors import ConfigError
    from sampan.serving.app import browser_origin, cors_middleware

    # as a browser's Origin header has them: Starlette compares exactly
    assert browser_origin("http://localhost:3000") == "http://localhost:3000"
    assert browser_origin("HTTPS://Dash.Example.com:443") == "https://dash.example.com"
    assert browser_origin("http://[::1]:8080") == "http://[::1]:8080"
    assert cors_middleware(["*", "https://A.example:8443"]).kwargs["allow_origins"] == [
        "*",
        "https://a.example:8443",
    ]
    for bad in (
        "https://dash.example.com/",
        "dash.example.com",
        "https://a.example/app",
        "https://a.example?x=1",
        "ftp://a.example",
        "https://user@a.example",
        "https://a.example:99999",
        "",
    ):
        with pytest.raises(ConfigError, match="is not an origin"):
            cors_middleware([bad])
