"""The report in a real headless browser (Debian's chromium): it renders every section,
the screenshot is a real page, and the page makes no network request (chromium's own
net log, not only a static look at the HTML). A control page proves the net-log check
would catch a request. Skipped, with the reason, where chromium is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from report_fixtures import EVIL_FAMILY

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); CI installs it"
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--no-pings",
    "--disable-domain-reliability",
    "--disable-features=NetworkTimeServiceQuerying,MediaRouter,OptimizationHints,Translate",
    # The browser's own background chatter (update checks, account probes) must not
    # leave the machine: every host name fails to resolve inside chromium.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
]
WEB = re.compile(r"^(?:https?|wss?|ftp)://", re.IGNORECASE)
BROWSER_ITSELF = "not an origin"  # netlog initiator of requests the browser makes on its own


def run_chromium(url: str, tmp: Path, *, size=(1280, 4000)) -> tuple[str, Path, dict[str, set[str]]]:
    """Load ``url``; returns the DOM, the screenshot path and the net log's URL requests."""
    shot, netlog = tmp / "shot.png", tmp / "netlog.json"
    cmd = [
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={tmp / 'profile'}",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={shot}",
        f"--log-net-log={netlog}",
        "--net-log-capture-mode=Default",
        "--dump-dom",
        url,
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout, shot, url_requests(netlog)


def url_requests(netlog: Path) -> dict[str, set[str]]:
    """URL -> the initiators chromium's net log gives for it (only URL_REQUEST_START_JOB
    events carry one; a URL seen without any gets an empty set)."""
    text = netlog.read_text(errors="replace")
    try:
        log = json.loads(text)
    except ValueError:  # a log cut short still lists its events
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    out: dict[str, set[str]] = {}
    for ev in log.get("events", []):
        params = ev.get("params") or {}
        if "url" in params:
            inits = out.setdefault(params["url"], set())
            if "initiator" in params:
                inits.add(params["initiator"])
    return out


def page_requests(requests: dict[str, set[str]]) -> list[str]:
    """Web URLs requested by the page: all but those only ever started by the browser
    itself (its update and account probes); a URL with no known initiator counts."""
    return sorted(u for u, inits in requests.items() if WEB.match(u) and inits != {BROWSER_ITSELF})


@needs_chromium
def test_netlog_check_catches_a_page_request(tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><h1>leak</h1><img src="http://127.0.0.1:9/pixel.png"></body></html>')
    dom, _shot, requests = run_chromium(page.as_uri(), tmp_path, size=(400, 300))
    assert "<h1>leak</h1>" in dom
    assert page_requests(requests) == ["http://127.0.0.1:9/pixel.png"]


@needs_chromium
def test_report_renders_offline_in_a_browser(report_path, tmp_path):
    from PIL import Image, ImageStat

    from qbayes.report.document import SECTION_IDS

    dom, shot, requests = run_chromium(report_path.as_uri(), tmp_path)
    for sid in SECTION_IDS:
        assert re.search(rf'<section id="{sid}"><h2>[^<]+</h2>', dom), f"section {sid} missing from the rendered DOM"
    assert EVIL_FAMILY not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert dom.count("<img ") >= 12
    assert page_requests(requests) == [], "the report made network requests"
    assert shot.is_file() and shot.stat().st_size > 50_000
    with Image.open(shot) as im:
        assert im.size == (1280, 4000)
        stat = ImageStat.Stat(im.convert("L"))
        assert stat.stddev[0] > 10, "the screenshot is (nearly) blank"
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
