"""Opens notebooks/02_pareto_explorer.ipynb in a real JupyterLab with headless Chromium, runs all
cells, and checks the Pareto plot and the Explorer's widgets render without an error.

Needs /usr/bin/chromium (``apt-get install -y chromium``) and the ``playwright`` Python package
(browsers are never downloaded: Chromium is driven through ``executable_path``). Leaves a
screenshot at ``test-artifacts/explorer.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SERVETUNE_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "servetune-browser-test"
NOTEBOOK = "notebooks/02_pareto_explorer.ipynb"
SCREENSHOT = REPO / "test-artifacts" / "explorer.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving the repository; yields its base URL."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (no browser download)"
    )
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("jupyterlab is not installed next to this Python")
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    log = open(tmp_path / "lab.log", "w")  # noqa: SIM115 - the server writes it while it runs
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "jupyter-lab"),
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={REPO}",
            "--ServerApp.open_browser=False",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        "JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:]
                    )
                time.sleep(0.5)
        yield base
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's whole process group (the server and its kernels)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def test_explorer_notebook_renders_plot_and_widgets(jupyterlab):
    from playwright.sync_api import sync_playwright

    SCREENSHOT.parent.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"{jupyterlab}/lab/tree/{NOTEBOOK}?token={TOKEN}", timeout=90_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            # the kernel must be idle before Run All, or the command is queued behind startup
            page.wait_for_selector(
                ".jp-Notebook-ExecutionIndicator[data-status='idle']",
                timeout=90_000,
                state="attached",
            )
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
            # main menu: Run → Run All Cells
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click(
                timeout=30_000
            )
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click(
                timeout=30_000
            )
            try:
                page.wait_for_selector(".widget-slider", timeout=150_000)
            except Exception:
                page.screenshot(
                    path=str(SCREENSHOT.with_name("explorer-failed.png")), full_page=True
                )
                raise
            page.wait_for_selector(".js-plotly-plot, .plot-container", timeout=60_000)
            page.wait_for_timeout(2000)  # let plotly finish laying out before the screenshot
            errors = page.locator(
                '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'
            ).all_inner_texts()
            page.locator(".jupyter-widgets.widget-vbox").first.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert not [e for e in errors if "Traceback" in e or "Error" in e], errors
            assert page.locator(".jupyter-widgets").count() > 0
            assert page.locator(".widget-slider").count() >= 2  # TTFT and TPOT SLOs
            assert page.locator(".js-plotly-plot").count() >= 1
            assert page.get_by_text("Export this config").count() == 1
            assert page.locator("text=winner: trial").count() >= 1
        finally:
            browser.close()


def test_html_report_renders_its_front_in_chromium(tmp_path):
    """The shared report opens from a file (no server) and draws its front with points."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    from playwright.sync_api import sync_playwright

    from tuner.analysis.html_report import write_report
    from tuner.spec import parse_spec
    from tuner.study.loop import run_study

    spec = parse_spec(
        {
            "name": "browser-report",
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": {"preset": "chat", "num_requests": 100},
            "engines": {"vllm": {"max_model_len": {"value": 8192}}},
            "slos": {"ttft_p99_ms": 3000},
            "budget": {"trials": 8},
            "storage": f"sqlite:///{tmp_path}/r.db",
        }
    )
    study = run_study(spec)
    path = write_report(study, spec, tmp_path / "report.html")
    shot = REPO / "test-artifacts" / "report.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.goto(path.as_uri(), timeout=60_000)
            page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=60_000)
            page.screenshot(path=str(shot), full_page=True)
            assert page.locator(".js-plotly-plot .scatterlayer .point").count() >= 2
            assert "ESTIMATED" in page.locator("#kind").inner_text()
            assert page.locator("#trials tr").count() == len(study.trials) + 1  # with header
            assert "SLO" in page.locator(".js-plotly-plot").inner_text()
        finally:
            browser.close()
