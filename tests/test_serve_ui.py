"""The web page of `edgekit serve` (issue #17 part 3) in a real headless chromium, over the DevTools
protocol: the page asks for the API key, lists the models, shows the manifest, and an image uploaded
through its file input gets the label `edgekit.load(artifact).classify(path)` gives."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import edgekit
from cdp import Browser
from conftest import ROOT
from serve_process import ServeProcess

pytestmark = pytest.mark.serve

KEY = "page-key"
ARTIFACTS = ROOT / "sample_models" / "artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServeProcess(tmp_path_factory.mktemp("ui") / "server.log", f"fp32={ARTIFACTS / 'digits_cnn_fp32.tflite'}",
                       f"int8={ARTIFACTS / 'digits_cnn_int8.tflite'}", "--threads", "1", env={"EDGEKIT_API_KEY": KEY})
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    browser = Browser(tmp_path_factory.mktemp("chromium") / "profile")
    try:
        browser.send("Page.navigate", url=f"http://{server.url}/")
        browser.wait_for("document.readyState === 'complete'")
        yield browser
    finally:
        browser.close()


def test_page_files_are_served_without_the_key_and_api_is_not(server):
    for path, kind in (("/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")):
        status, headers, _ = server.request("GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind)
        assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert server.request("POST", "/v2/repository/index")[0] == 401


def test_no_page_when_turned_off(tmp_path):
    srv = ServeProcess(tmp_path / "server.log", ARTIFACTS / "digits_cnn_int8.tflite", "--no-ui")
    try:
        status, headers, body = srv.request("GET", "/")
        assert status == 404 and json.loads(body) == {"error": "Not Found"}
    finally:
        srv.stop()


def test_upload_an_image_in_the_browser(page, samples):
    image = samples / "validation" / "0000_label5.png"
    # the server needs a key: the page asks for it before anything else
    page.wait_for("!document.getElementById('auth').hidden")
    page.eval(f"document.getElementById('key').value = {json.dumps(KEY)}; "
              "document.getElementById('auth').requestSubmit()")
    assert page.wait_for("Array.from(document.querySelectorAll('#model option'), o => o.value).join(',')") == "fp32,int8"
    page.eval("const s = document.getElementById('model'); s.value = 'int8'; s.dispatchEvent(new Event('change'))")
    manifest = page.wait_for("document.getElementById('manifest').innerText.includes('int8 (tflite)') && "
                             "document.getElementById('manifest').innerText")
    assert "top-1 agreement 100.0 %" in manifest and "KB" in manifest

    page.set_files("#file", image)
    label = page.wait_for("document.querySelector('#results .label')?.textContent")
    expected = edgekit.load(ARTIFACTS / "digits_cnn_int8.tflite").classify(str(image))[0][0][0]
    assert label == expected == "5"
    assert page.eval("document.querySelectorAll('#results li').length") == 5
    assert page.eval("document.getElementById('latency').textContent").startswith("latency: server ")
    assert page.errors == []


def test_paste_a_tensor_in_the_browser(page, samples):
    image = samples / "validation" / "0000_label5.png"
    page.wait_for("document.getElementById('model').value")
    x = (np.asarray(Image.open(image), dtype=np.float32)[..., None] / 255.0).round(5)   # mean 0, std 255
    page.eval(f"document.getElementById('tensor').value = {json.dumps(json.dumps(x.tolist()))}; "
              "document.getElementById('results').replaceChildren(); document.getElementById('run-tensor').click()")
    label = page.wait_for("document.querySelector('#results .label')?.textContent")
    model = edgekit.load(ARTIFACTS / "digits_cnn_int8.tflite")
    assert label == model.labels[int(model.run([x[None]])[0][0].argmax())] == "5"
    assert page.errors == []
