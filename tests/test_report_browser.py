"""The HTML report as a reader opens it: the smoke study's ``index.html`` in headless Chromium, from the file system
(no server), as it would open from a cluster's shared filesystem or an unpacked zip.

Chromium loads a copy of the page with one script added, which waits for the load event and writes what the browser
made of the page (every image's natural width, every link, every element id, every table's rows and size) into the
DOM that ``--dump-dom`` prints. Needs Debian's ``chromium`` package: without it the tests skip and say so, except
where ``WALKING_NOISE_REQUIRE_BROWSER`` is set (``.ci/run`` installs the package and sets it, so CI never skips).

    python tests/test_report_browser.py REPORT_DIR OUT.png     # a screenshot of REPORT_DIR/index.html
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
#: Headless on a machine with no display, no GPU, no network and as root (hence no sandbox); no background
#: connections, which a closed network refuses, many at a time.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")
TIMEOUT = 180  # seconds for one Chromium call on a loaded 2-core machine
CHECK_ID = "wn-browser-check"
CHECK_SCRIPT = """<script>
addEventListener("load", () => {
  const box = (e) => e.getBoundingClientRect();
  const found = {
    title: document.title,
    h1: [...document.querySelectorAll("h1")].map((h) => h.textContent),
    images: [...document.images].map((i) => ({src: i.getAttribute("src"), width: i.naturalWidth})),
    links: [...document.links].map((a) => a.getAttribute("href")),
    ids: [...document.querySelectorAll("[id]")].map((e) => e.id),
    remote: [...document.querySelectorAll("[src],[href]")].map((e) => e.getAttribute("src") || e.getAttribute("href"))
      .filter((u) => /^[a-z][a-z0-9+.-]*:/i.test(u)),
    items: [...document.querySelectorAll("li")].map((li) => li.textContent),
    paragraphs: [...document.querySelectorAll("p")].map((para) => para.textContent),
    tables: [...document.querySelectorAll("table")].map((t) => ({
      cells: [...t.rows].map((r) => r.cells.length), headers: t.rows[0].querySelectorAll("th").length,
      width: box(t).width, height: box(t).height})),
  };
  const out = document.createElement("pre");
  out.id = "%s";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>""" % CHECK_ID


def chromium() -> str:
    """Path of Debian's Chromium; skip (or fail where the browser is required) when it is not installed."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        why = "Debian's package chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("WALKING_NOISE_REQUIRE_BROWSER"):
            pytest.fail(why + ", and WALKING_NOISE_REQUIRE_BROWSER is set")
        pytest.skip(why)
    return path


def run_chromium(*args: str) -> subprocess.CompletedProcess:
    """Chromium with a fresh profile, so no state of an earlier call (or of a person's browser) is used."""
    with tempfile.TemporaryDirectory(prefix="wn-chromium-") as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=TIMEOUT, check=False)


def open_page(page: Path) -> dict:
    """What Chromium made of ``page`` once loaded (see ``CHECK_SCRIPT``). The check script goes into a copy beside
    the page, so relative links and images resolve exactly as from the page itself."""
    probe = page.with_name(f".{page.stem}.browser-check.html")
    probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    try:
        proc = run_chromium("--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    found = re.search(rf'<pre id="{CHECK_ID}">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert found, f"Chromium did not run the page's load handler (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def unresolved_links(found: dict, folder: Path) -> list[str]:
    """Links of the page that lead nowhere: a missing ``#anchor``, a missing file, or anything remote."""
    bad = []
    for href in found["links"]:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc:
            bad.append(f"{href}: remote (the page must open offline)")
        elif not parts.path:
            if unquote(parts.fragment) not in found["ids"]:
                bad.append(f"{href}: no element has this id")
        elif not (folder / unquote(parts.path)).is_file():
            bad.append(f"{href}: no such file beside the page")
    return bad


def markdown_tables(text: str) -> list[int]:
    """The number of body rows of each table in a Markdown text."""
    tables, rows = [], 0
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            rows += 1
        elif rows:
            tables.append(rows - 2)  # less the header and its |---| line
            rows = 0
    return tables


def png_size(path: Path) -> tuple[int, int]:
    with path.open("rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def screenshot(page: Path, out: Path, width: int = 1100, height: int = 1500) -> Path:
    """A PNG of the top ``width`` x ``height`` CSS pixels of ``page`` as Chromium renders it."""
    proc = run_chromium(f"--screenshot={out}", f"--window-size={width},{height}", page.as_uri())
    assert out.is_file(), f"Chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the smoke study, one epoch per run, made the way a user makes it (`run`, then `report`)."""
    from walking_noise.cli import main

    chromium()  # skip before training when there is no browser
    tmp = tmp_path_factory.mktemp("browser")
    study = str(ROOT / "seml_configs" / "smoke.yaml")
    assert main(["run", study, "--store", str(tmp / "store"), "--set", "training.epochs=1", "--no-progress"]) == 0
    assert main(["report", "--store", str(tmp / "store"), "--study", study, "--set", "training.epochs=1",
                 "--out", str(tmp / "report")]) == 0
    return tmp / "report"


@pytest.fixture(scope="module")
def page(report: Path) -> dict:
    return open_page(report / "index.html")


def test_every_image_loads(report: Path, page: dict) -> None:
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (report / "index.md").read_text())
    assert shown, "the smoke study's report shows no figure"
    assert [i["src"] for i in page["images"]] == shown
    assert [i["src"] for i in page["images"] if i["width"] <= 0] == [], "images that did not load"


def test_every_link_resolves_and_nothing_is_remote(report: Path, page: dict) -> None:
    assert page["links"], "the page links nothing"
    assert unresolved_links(page, report) == []
    assert page["remote"] == [], "a static page: no CDN, no server"
    assert len(page["ids"]) == len(set(page["ids"])), "duplicate element ids make anchors ambiguous"


def test_every_table_renders_as_a_table(report: Path, page: dict) -> None:
    expected = markdown_tables((report / "index.md").read_text())
    assert expected, "the smoke study's report has no table"
    assert [len(t["cells"]) - 1 for t in page["tables"]] == expected  # each Markdown table, every row
    for table in page["tables"]:
        assert table["headers"] == table["cells"][0] and len(set(table["cells"])) == 1, table
        assert table["width"] > 0 and table["height"] > 0


def test_the_page_says_what_a_reader_needs_first(report: Path, page: dict) -> None:
    assert page["h1"] == ["Walking Noise report: smoke"] and "smoke" in page["title"]
    text = (report / "index.md").read_text()
    assert re.search(r"\*\*written\*\* \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "runs.csv" in page["links"] and "index.md" in page["links"]
    # run counts per series: the smoke study's global series has 10 runs, 5 levels, 2 seeds
    counts = text.split("## Runs per series")[1].split("\n## ")[0]
    assert "| 10 | 10 | 0 | 5 (0.01 to 10) | 2 |" in counts
    # Fig. 1 has its fit parameters beside it, taken from the Table I CSV
    fig1 = text.split("## Fig. 1")[1].split("\n## ")[0]
    assert "**Fit parameters**" in fig1 and "mu (68 %)" in fig1 and "table1_global_mu.csv" in fig1


def markdown_items(text: str) -> list[str]:
    """The text of every list item of a Markdown text, its hard-wrapped continuation lines joined, as a browser
    shows it (no ** or backticks)."""
    items: list[str] = []
    open_item = False
    for line in text.splitlines():
        if line.lstrip().startswith("- "):
            items.append(line.lstrip()[2:])
            open_item = True
        elif open_item and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
        else:
            open_item = False
    return [re.sub(r"\*\*|`|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", i) for i in items if i]


def test_a_hard_wrapped_list_item_renders_as_one_item(report: Path, page: dict) -> None:
    made = (report / "index.md").read_text().split("## How these outputs were made")[1]
    wrapped = markdown_items(made)
    assert len(wrapped) >= 3 and any(len(i) > 120 for i in wrapped), "the section has long, wrapped items"
    for item in wrapped:
        assert item in page["items"], f"not one list item on the page: {item[:60]}..."
    tails = [line.strip() for line in made.splitlines() if line.startswith("  ")]
    assert not [p for p in page["paragraphs"] if p.strip() in tails], "a continuation line became a paragraph"


def test_a_missing_image_a_broken_link_and_a_missing_anchor_are_caught(tmp_path: Path) -> None:
    (tmp_path / "there.csv").write_text("a\n1\n")
    page = tmp_path / "index.html"
    page.write_text("<!doctype html><html><body><h2 id='here'>x</h2><img src='missing.png'>"
                    "<a href='there.csv'>ok</a><a href='#here'>ok</a><a href='gone.csv'>bad</a>"
                    "<a href='#nowhere'>bad</a><a href='https://cdn.example/x.js'>bad</a></body></html>")
    found = open_page(page)
    assert [i["width"] for i in found["images"]] == [0]
    assert [b.split(":")[0] for b in unresolved_links(found, tmp_path)] == ["gone.csv", "#nowhere", "https"]
    assert not list(tmp_path.glob(".*browser-check*")), "the probe copy is removed"


def test_a_screenshot_shows_the_page(report: Path, tmp_path: Path) -> None:
    out = screenshot(report / "index.html", tmp_path / "report.png", 900, 700)
    assert png_size(out) == (900, 700) and out.stat().st_size > 20_000  # a blank page compresses to ~3 KB


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.rsplit("\n\n", 1)[-1])
    print(screenshot(Path(sys.argv[1]).resolve() / "index.html", Path(sys.argv[2]).resolve()))
