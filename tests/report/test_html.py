"""report/index.html in a real browser: headless Chromium loads it, with no console error and no broken image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from hpcnas.report.build import report
from tests.report.test_report import fake_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if CHROMIUM is None and os.environ.get("HPCNAS_REQUIRE_BROWSER") == "1":
    raise RuntimeError("HPCNAS_REQUIRE_BROWSER=1 but no chromium: envs/setup.sh --dev installs it")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (envs/setup.sh --dev installs it)")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]


def load(page, *extra):
    """The DOM after the page's scripts ran, and the page's console messages."""
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, "--virtual-time-budget=5000", *extra, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    body = re.search(r"<body([^>]*)>", proc.stdout).group(1)
    return proc.stdout, dict(re.findall(r'data-([\w-]+)="([^"]*)"', body)), console


@pytest.mark.slow
@needs_browser
def test_the_report_page_loads_cleanly_with_one_row_per_run(tmp_path):
    fake_run(tmp_path / "a", "darts_unetpp", history=True)
    fake_run(tmp_path / "b", "resnext_unet")
    fake_run(tmp_path / "c")
    out = report([str(tmp_path / r) for r in "abc"])
    page = out / "index.html"
    dom, marks, console = load(page)
    assert marks["ready"] == "yes" and console == []
    pngs = len(list(out.glob("*.png")))
    assert int(marks["images"]) == pngs > 5 and marks["broken-images"] == "0"
    assert dom.count('<tr class="run">') == 3
    images = re.findall(r'<a href="([^"]+)"[^>]*><img src="([^"]+)"', dom)  # each figure opens at full size
    assert len(images) == dom.count("<figure>") > 5 and all(href == src for href, src in images)
    assert "Discrete search a" in dom and "object precision and recall".lower() in dom.lower()
    # every run's prediction examples, not only the first one's
    assert {"predictions_a.png", "predictions_b.png", "predictions_c.png"} <= {p.name for p in out.glob("*.png")}
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 50  # text, tables and figures: not a blank page


@pytest.mark.slow
@needs_browser
def test_the_checks_do_see_a_broken_image_and_a_script_error(tmp_path):
    fake_run(tmp_path / "a")
    out = report([str(tmp_path / "a")])
    page = out / "broken.html"
    page.write_text(
        (out / "index.html")
        .read_text()
        .replace(
            "<h1>hpcnas report</h1>", '<h1>hpcnas report</h1><img src="missing.png"><script>notAFunction();</script>'
        )
    )
    _, marks, console = load(page)
    assert marks["broken-images"] == "1" and any("notAFunction" in line for line in console)
