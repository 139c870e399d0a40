"""The console over real HTTP: sign-in, sessions, CSRF, escaping, admin actions, usage."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.console.conftest import Console

CLIENTS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def close_clients():
    yield
    while CLIENTS:
        CLIENTS.pop().close()


def client_of(console: Console) -> httpx.Client:
    CLIENTS.append(httpx.Client(base_url=console.url, follow_redirects=False))
    return CLIENTS[-1]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match[1]


def signed_in(console: Console, key: str) -> httpx.Client:
    client = client_of(console)
    client.follow_redirects = True
    form = client.get("/console/login")
    r = client.post("/console/login", data={"key": key, "csrf": csrf_of(form.text)})
    assert r.status_code == 200 and r.url.path == "/console/models", r.text
    return client


def session_token(client: httpx.Client) -> str:
    page = client.get("/console/models").text
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page)[1]


def test_pages_need_a_signed_in_key_when_keys_are_required(console: Console):
    for path in ("/console/models", "/console/usage", "/console/admin"):
        r = httpx.get(console.url + path)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login"), path
    login = httpx.get(console.url + "/console/login")
    assert login.status_code == 200
    assert "script-src 'self'" in login.headers["content-security-policy"]


def test_sign_in_refuses_a_wrong_key_and_a_missing_csrf_token(console: Console):
    client = client_of(console)
    token = csrf_of(client.get("/console/login").text)
    r = client.post("/console/login", data={"key": "smp_000000000000_" + "x" * 43, "csrf": token})
    assert r.status_code == 401 and "Unknown API key" in r.text
    assert "sampan_console" not in r.cookies
    fresh = client_of(console)  # no login-CSRF cookie: a cross-site post
    r = fresh.post("/console/login", data={"key": console.admin_key, "csrf": token})
    assert r.status_code == 401 and "security token" in r.text


def test_catalog_lists_packages_with_lineage_and_exports(console: Console):
    client = signed_in(console, console.admin_key)
    page = client.get("/console/models").text
    assert 'data-package="digits"' in page and 'data-package="evil"' in page
    assert "image-classification" in page and ">onnx<" in page
    detail = client.get("/console/models/evil").text
    assert "relabel" in detail and console.digits_ref in detail  # lineage names the parent
    assert client.get("/console/models/nope").status_code == 404


def test_a_key_sees_only_the_models_it_may_call(console: Console):
    client = signed_in(console, console.predict_key)  # scope predict:digits*
    page = client.get("/console/models").text
    assert 'data-package="digits"' in page and 'data-package="evil"' not in page
    for path in ("/console/models/evil", "/console/try/evil"):
        assert client.get(path).status_code == 404, path
    assert client.get("/console/try/digits").status_code == 200


def test_html_in_labels_and_model_cards_renders_as_text(console: Console):
    client = signed_in(console, console.admin_key)
    page = client.get("/console/models/evil").text
    card = page.split('id="model-card"')[1]
    assert "<script" not in card and "<img" not in card
    assert "&lt;script&gt;window.__xss = 'card'&lt;/script&gt;" in card
    assert "&lt;img src=x onerror=" in card
    try_page = client.get("/console/try/evil").text
    assert "<script>window.__xss" not in try_page  # config JSON escapes < as \u003c


def test_session_calls_need_the_csrf_header_and_end_when_the_key_is_revoked(console: Console):
    client = signed_in(console, console.admin_key)
    image = {"file": console.image.read_bytes()}
    r = client.post("/v1/models/digits:predict", files=image)
    assert r.status_code == 401 and "CSRF" in r.text  # a cookie alone (cross-site) is refused
    token = session_token(client)
    r = client.post("/v1/models/digits:predict", files=image, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == console.digit
    prefix = console.admin_key.split("_")[1]
    from sampan.platform.db import Database
    from sampan.platform.keys import Keys

    Keys(Database(home=console.home)).revoke(prefix)
    console.server.app.state.extension._cache.clear()  # skip the 5 s key cache
    assert client.get("/console/admin").url.path == "/console/login"


def test_admin_creates_limits_and_revokes_keys_with_audit(console: Console):
    client = signed_in(console, console.admin_key)
    page = client.get("/console/admin").text
    token = csrf_of(page)
    r = client.post("/console/admin/apps", data={"name": "line-3", "csrf": token})
    assert r.status_code == 200 and "App line-3 created." in r.text
    r = client.post(
        "/console/admin/keys",
        data={"app": "line-3", "scopes": "predict:digits", "quotas": "100/day", "csrf": token},
    )
    secret = re.search(r'id="new-key-value">(smp_[0-9a-f]{12}_[A-Za-z0-9_-]{43})<', r.text)[1]
    prefix = secret.split("_")[1]
    assert client.get("/console/admin").text.count(secret) == 0  # shown once
    ok = httpx.post(
        f"{console.url}/v1/models/digits:predict",
        files={"file": console.image.read_bytes()},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert ok.status_code == 200
    r = client.post(
        f"/console/admin/keys/{prefix}/limits", data={"rate": "5/s", "quotas": "", "csrf": token}
    )
    assert f"Limits of key {prefix} saved." in r.text
    r = client.post("/console/admin/keys", data={"app": "line-3", "scopes": "bad", "csrf": token})
    assert r.status_code == 400 and "is not &#39;admin&#39; or" in r.text
    r = client.post(f"/console/admin/keys/{prefix}/revoke", data={"csrf": token})
    assert f"Key {prefix} revoked." in r.text
    row = r.text.split(f'data-prefix="{prefix}"')[1].split("</tr>")[0]
    assert "revoked" in row
    audit = r.text.split('id="audit"')[1]
    for action in ("app.create", "key.create", "key.limits", "key.revoke", "console.signin"):
        assert action in audit
    assert f"console:key:{console.admin_key.split('_')[1]}" in audit


@pytest.mark.parametrize("forged", ["", "stale-token"])
def test_admin_forms_refuse_a_missing_or_wrong_csrf_token(console: Console, forged: str):
    client = signed_in(console, console.admin_key)
    r = client.post("/console/admin/apps", data={"name": "sneaky", "csrf": forged})
    assert r.status_code == 400 and "security token" in r.text
    assert "sneaky" not in client.get("/console/admin").text.split('id="apps"')[1]


def test_a_predict_key_cannot_administer(console: Console):
    client = signed_in(console, console.predict_key)
    assert client.get("/console/admin").status_code == 403
    assert client.get("/console/usage").status_code == 403


def test_usage_page_counts_calls_by_model_and_app(console: Console):
    for _ in range(3):
        r = httpx.post(
            f"{console.url}/v1/models/digits:predict",
            files={"file": console.image.read_bytes()},
            headers={"Authorization": f"Bearer {console.predict_key}"},
        )
        assert r.status_code == 200
    client = signed_in(console, console.admin_key)
    page = client.get("/console/usage?by=app&since=1h").text
    row = page.split('id="usage-totals"')[1].split("<td>shop</td>")[1].split("</tr>")[0]
    assert re.findall(r'<td class="num">([\d,]+)</td>', row)[:2] == ["3", "3"]  # calls, ok
    assert "<figcaption>Requests</figcaption>" in page and "Latency p99" in page
    assert 'data-model="digits"' in page and "Batch sizes: digits" in page


def test_without_the_platform_the_console_browses_and_says_what_is_missing(serve_home):
    from sampan.console import console_router
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store
    from tests.serving.conftest import RunningServer, free_port

    home, onnx_ref, _ = serve_home
    store = Store(home)
    app = build_app([onnx_ref], ServeSettings(), store, routers=[console_router(store)])
    with RunningServer(app, free_port()) as running, httpx.Client(base_url=running.url) as client:
        assert 'data-package="digits"' in client.get("/console/models").text  # no sign-in
        usage = client.get("/console/usage").text
        assert "calls are not metered" in usage and 'data-model="digits"' in usage
        admin = client.get("/console/admin")
        assert admin.status_code == 404 and "--auth off" in admin.text
        assert (
            client.get("/console/static/console.css").headers["content-type"].startswith("text/css")
        )
        for bad in ("../app.py", "..%2Fapp.py", "routes.py", ".hidden.css"):
            assert client.get(f"/console/static/{bad}").status_code == 404, bad


def test_signing_out_ends_the_session_even_for_a_copied_cookie(console: Console):
    client = signed_in(console, console.admin_key)
    stolen = client.cookies.get("sampan_console")
    token = session_token(client)
    r = client.post("/console/logout", data={"csrf": token})
    assert r.url.path == "/console/login"
    thief = client_of(console)
    thief.cookies.set("sampan_console", stolen)
    console.server.app.state.extension._session_cache.clear()  # skip the 5 s cache
    assert thief.get("/console/admin").status_code == 303  # to the sign-in page
    r = thief.post(
        "/v1/models/digits:predict", json={"instances": []}, headers={"X-CSRF-Token": token}
    )
    assert r.status_code == 401
    dead = thief.post("/console/logout", data={})  # a dead session just loses its cookie
    assert dead.status_code == 303 and 'sampan_console=""' in dead.headers["set-cookie"]


def test_sign_in_follows_only_console_pages():
    from sampan.console.signin import safe_next

    assert safe_next("/console/usage?by=app") == "/console/usage?by=app"
    for hostile in (
        "https://evil.example/",
        "//evil.example",
        "/console//evil.example",
        "/v1/x",
        "",
    ):
        assert safe_next(hostile) == "/console/models", hostile


def test_forms_from_another_origin_and_from_a_non_admin_are_refused(console: Console):
    client = signed_in(console, console.admin_key)
    token = csrf_of(client.get("/console/admin").text)
    for origin in ("http://evil.example", "null"):
        r = client.post(
            "/console/admin/apps", data={"name": "x1", "csrf": token}, headers={"Origin": origin}
        )
        assert r.status_code == 400 and "Cross-site form refused" in r.text, origin
    same = client.post(
        "/console/admin/apps", data={"name": "x2", "csrf": token}, headers={"Origin": console.url}
    )
    assert "App x2 created." in same.text
    shop = signed_in(console, console.predict_key)
    own_token = session_token(shop)
    r = shop.post("/console/admin/apps", data={"name": "x3", "csrf": own_token})
    assert r.status_code == 403
    assert "x3" not in client.get("/console/admin").text


def test_a_session_calls_the_admin_rest_with_its_csrf_header_only(console: Console):
    client = signed_in(console, console.admin_key)
    assert client.get("/v1/admin/apps").status_code == 401
    r = client.get("/v1/admin/apps", headers={"X-CSRF-Token": session_token(client)})
    assert r.status_code == 200 and {a["name"] for a in r.json()["apps"]} >= {"ops", "shop"}


def test_new_limits_apply_at_once_and_a_resent_key_form_makes_no_second_key(console: Console):
    client = signed_in(console, console.admin_key)
    page = client.get("/console/admin").text
    token, nonce = csrf_of(page), re.search(r'name="nonce" value="([^"]+)"', page)[1]
    form = {"app": "shop", "scopes": "predict:digits", "csrf": token, "nonce": nonce}
    created = client.post("/console/admin/keys", data=form).text
    secret = re.search(r'id="new-key-value">(smp_[^<]+)<', created)[1]
    again = client.post("/console/admin/keys", data=form).text  # the browser's reload
    assert "was sent already" in again and 'id="new-key-value"' not in again
    prefix = secret.split("_")[1]
    assert len(re.findall(r'<tr data-prefix="[0-9a-f]{12}" class="active"', again)) == 3
    r = client.post(
        f"/console/admin/keys/{prefix}/limits",
        data={"rate": "1/min", "burst": "1", "quotas": "", "csrf": token},
    )
    assert 'value="1/min"' in r.text
    headers = {"Authorization": f"Bearer {secret}"}
    files = {"file": console.image.read_bytes()}
    first = httpx.post(f"{console.url}/v1/models/digits:predict", files=files, headers=headers)
    second = httpx.post(f"{console.url}/v1/models/digits:predict", files=files, headers=headers)
    assert (first.status_code, second.status_code) == (200, 429)


def test_rates_show_in_units_they_parse_back_from():
    from sampan.console.admin import rate_text
    from sampan.platform.keys import parse_rate

    for per_s in (20.0, 1 / 60, 0.5, 1e6, 2.5, 7 / 60):
        shown = rate_text(per_s)
        assert abs(parse_rate(shown) - per_s) < 1e-6 * per_s, shown
    assert rate_text(None) == ""


def test_the_batch_histogram_is_read_from_cumulative_buckets():
    from sampan.console.usage import batch_histogram

    cumulative = [("1.0", 4), ("2.0", 4), ("4.0", 7), ("8.0", 9), ("16.0", 9), ("+Inf", 9)]
    assert batch_histogram(cumulative, 8) == (["≤1", "≤2", "≤4", "≤8"], [4, 0, 3, 2])
    assert batch_histogram([], 32) == ([], [])


def test_an_open_server_shows_pages_but_not_admin_without_an_admin_key(serve_home):
    from sampan.console import console_router
    from sampan.platform.db import Database
    from sampan.platform.gate import build_gate
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store
    from tests.serving.conftest import RunningServer, free_port

    home, onnx_ref, _ = serve_home
    store = Store(home)
    gate = build_gate(Database(home=home), open=True, interval=0.2)
    app = build_app(
        [onnx_ref], ServeSettings(), store, extension=gate, routers=[console_router(store)]
    )
    with RunningServer(app, free_port()) as running, httpx.Client(base_url=running.url) as client:
        assert client.get("/console/models").status_code == 200
        assert client.get("/console/try/digits").status_code == 200
        assert client.get("/console/usage").status_code == 200
        admin = client.get("/console/admin")
        assert admin.status_code == 303 and admin.headers["location"].startswith("/console/login")


def test_a_broken_version_is_named_and_bad_versions_are_404(console: Console):
    from sampan.store import Store

    readable = Store(console.home).versions("digits")  # other tests may have added some
    latest = readable[-1]
    broken = console.home / "packages" / "digits" / "99"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    client = signed_in(console, console.admin_key)
    row = client.get("/console/models").text.split('data-package="digits"')[1].split("</tr>")[0]
    # the newest readable version, of all of them
    assert f"v{latest} <" in row and f"of {len(readable) + 1}" in row, row
    page = client.get("/console/models/digits")
    assert page.status_code == 200 and "v99" in page.text and "cannot be read" in page.text
    assert 'id="model-card"' in page.text and f"<h1>digits v{latest}</h1>" in page.text
    for version in ("abc", "99", "77"):
        assert client.get(f"/console/models/digits?version={version}").status_code == 404
    assert client.get("/console/models/digits?version=1").status_code == 200
