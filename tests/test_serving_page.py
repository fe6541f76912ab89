"""The test page of ``movinet serve`` (``GET /``) in a real headless Chromium driven by Playwright: an
uploaded mp4 shows the API's label and a drawn timeline, the fake camera streams frames into a session
that Stop closes, and nothing is loaded from anywhere but the server. The server is a real uvicorn on
127.0.0.1 (in a thread, so the test can count its open sessions) with a bearer token, as the page must
work against a server that asks for one."""

from __future__ import annotations

import os
import re
import threading
import time

import pytest
import requests
from test_pipeline import chromium
from test_serving import CLASSES, CONFIG, free_port, model_file, video  # noqa: F401 (fixtures)

from movinet.inference.page import CONTENT_SECURITY_POLICY
from movinet.inference.predictor import Predictor
from movinet.inference.server import ServerLimits, create_app
from movinet.inference.video_input import Preprocessing

pytestmark = pytest.mark.slow

TOKEN = "page-test-token"
WAIT_MS = 20_000

# Fraction of the timeline canvas painted, and how many fully opaque pixels have each class's colour.
CANVAS_PIXELS = """() => {
  const canvas = document.getElementById("timeline");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const palette = window.movinetPage.palette, counts = {};
  for (const label in palette) counts[label] = 0;
  let painted = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] === 0) continue;
    painted += 1;
    if (data[i + 3] !== 255) continue;
    for (const label in palette) {
      const [r, g, b] = palette[label];
      if (data[i] === r && data[i + 1] === g && data[i + 2] === b) counts[label] += 1;
    }
  }
  return {painted: painted / (data.length / 4), counts};
}"""

# The stream's state and what the page shows of it, read together.
LIVE = """() => [window.movinetPage.stream, {
  label: document.getElementById("live-label").textContent,
  score: document.getElementById("live-score").textContent,
  frames: document.getElementById("live-frames").textContent,
}]"""


@pytest.fixture(scope="module")
def served(model_file):  # noqa: F811 (the fixture imported above)
    """A real HTTP server on a free port; yields its URL and the app (its ``state.store`` counts sessions)."""
    import uvicorn

    predictor = Predictor.from_checkpoints([model_file], Preprocessing.from_config(CONFIG))
    app = create_app(predictor, ServerLimits(max_upload_mb=2), token=TOKEN)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{server.config.port}", app
    server.should_exit = True
    thread.join(timeout=20)


@pytest.fixture(scope="module")
def browser():
    """The system Chromium under Playwright (no ``playwright install``: the browser is the apt one)."""
    path = chromium()
    if path is None:
        pytest.skip("no Chromium here (CI installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise AssertionError("CI must install playwright (the test extra)") from None
        pytest.skip("playwright is not installed")
    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
    args += ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a generated camera
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=args)
        yield launched
        launched.close()


class Recorded:
    """Every request the page makes, the most frame pushes ever in flight together, and its errors."""

    def __init__(self, page) -> None:
        self.urls: list[str] = []
        self.headers: dict[str, dict] = {}
        self.errors: list[str] = []
        self.in_flight = self.most_in_flight = 0
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _started(self, request) -> None:
        self.urls.append(request.url)
        self.headers[request.url] = request.headers
        if "/frames" in request.url:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def _ended(self, request) -> None:
        if "/frames" in request.url:
            self.in_flight -= 1

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.errors.append(message.text)


@pytest.fixture
def page(browser, served):
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    page.recorded = Recorded(page)
    page.goto(served[0] + "/")
    page.wait_for_function("() => window.movinetPage.health !== null", timeout=WAIT_MS)
    yield page
    context.close()


def upload(page, path) -> None:
    page.evaluate("() => { window.movinetPage.prediction = undefined; }")  # "not answered yet"
    page.set_input_files("#video", str(path))
    page.click("#classify")
    page.wait_for_function(
        "() => window.movinetPage.prediction !== undefined && !document.getElementById('classify').disabled",
        timeout=WAIT_MS,
    )


def test_uploaded_video_shows_the_api_label_and_a_drawn_timeline(page, served, video, tmp_path):  # noqa: F811
    url, _ = served
    with open(video, "rb") as f:
        api = requests.post(
            f"{url}/predict",
            params={"per_frame": "true", "top_k": 5},
            files={"video": ("clip.mp4", f, "video/mp4")},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        ).json()
    assert page.evaluate(CANVAS_PIXELS)["painted"] == 0  # blank before any answer

    upload(page, video)  # no token yet: the server's 401 is shown as it is
    assert page.text_content("#upload-error").startswith("401: missing or wrong bearer token")
    page.fill("#token", TOKEN)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 20)
    upload(page, junk)
    assert page.text_content("#upload-error").startswith("422: ") and "junk.mp4" in page.text_content("#upload-error")

    upload(page, video)
    assert page.text_content("#upload-error") == ""
    assert page.text_content("#label").startswith(api["label"] + " (")
    shown = page.eval_on_selector_all("#top li", "items => items.map(i => i.textContent)")
    assert [re.sub(r"\d\.\d{3}$", "", s) for s in shown] == [t["label"] for t in api["top"]]
    timeline = page.evaluate("() => window.movinetPage.timeline")
    assert len(api["per_frame"]) > 3 and timeline == api["per_frame"]
    pixels = page.evaluate(CANVAS_PIXELS)
    assert pixels["painted"] > 0.2, pixels  # bands cover most of the plot
    drawn = {label for label, n in pixels["counts"].items() if n > 50}
    assert drawn == {row["label"] for row in api["per_frame"]} and drawn <= set(CLASSES)
    assert page.recorded.errors == []


def test_camera_streams_live_labels_and_stop_closes_the_session(page, served):
    url, app = served
    page.fill("#token", TOKEN)
    page.click("#start")
    page.wait_for_function(
        "() => (window.movinetPage.stream && window.movinetPage.stream.answers >= 6)"
        " || document.getElementById('camera-error').textContent",
        timeout=WAIT_MS,
    )
    assert page.text_content("#camera-error") == ""
    assert len(app.state.store) == 1
    stream, shown = page.evaluate(LIVE)  # in one call: the page keeps updating meanwhile
    received = stream["received"]
    assert received == sorted(set(received)) and received[-1] >= 6  # one new frame per answer, growing
    assert shown["label"] == stream["last"]["label"] and shown["label"] in CLASSES
    assert float(shown["score"]) == pytest.approx(stream["last"]["score"], abs=5e-4)
    assert shown["frames"] == f"{stream['last']['frames_received']} frames received"

    page.click("#stop")
    page.wait_for_function("() => window.movinetPage.lastStream && window.movinetPage.lastStream.closed", timeout=5000)
    assert len(app.state.store) == 0
    assert page.evaluate("() => document.getElementById('camera').srcObject") is None
    closed = requests.post(
        f"{url}/streams/{stream['id']}/frames", data=b"x", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert closed.status_code == 404
    recorded = page.recorded
    assert recorded.most_in_flight == 1  # the next frame waited for the previous answer
    api_calls = [u for u in recorded.urls if "/streams" in u]
    assert api_calls and all(recorded.headers[u].get("authorization") == f"Bearer {TOKEN}" for u in api_calls)
    assert page.text_content("#camera-error") == "" and recorded.errors == []


def test_page_loads_nothing_but_the_server(page, served):
    url, app = served
    reply = requests.get(f"{url}/", timeout=10)  # no token needed for the page
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    html = reply.text
    assert not re.search(r"\b(https?|wss?|ftp):", html, re.I)
    assert not re.search(r"<link|<img|<iframe|\bsrc=|\bhref=|@import|url\(|[\"'(=]\s*//\w", html, re.I)
    assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "connect-src 'self';" in CONTENT_SECURITY_POLICY
    assert page.text_content("#class-count") == str(len(CLASSES))
    assert page.text_content("#classes") == ", ".join(CLASSES)
    page.fill("#token", TOKEN)
    page.reload()  # the token is kept for the tab (sessionStorage), not typed again
    page.wait_for_function("() => window.movinetPage.health !== null", timeout=WAIT_MS)
    assert page.input_value("#token") == TOKEN
    assert page.recorded.urls and all(u.startswith(url + "/") for u in page.recorded.urls), page.recorded.urls
    assert page.recorded.errors == []  # the inline script and style ran under the policy (their hashes match)
    served_schema = requests.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    bare = create_app(app.state.model.predictor, token=TOKEN)
    bare.router.routes = [r for r in bare.router.routes if getattr(r, "path", None) != "/"]
    assert "/" not in served_schema["paths"] and served_schema == bare.openapi()
