"""The documentation site, built strictly and read in a real browser.

The site (``mkdocs.yml``, ``docs/``) is built with ``mkdocs build --strict`` into a temporary
folder, served on a free local port by ``http.server`` and opened in headless Chromium
through Playwright, using the system's Chromium (Playwright's own browsers are not needed).
Every request that leaves the local server is refused and counted as an error, so the
checks also show that the site works offline. Screenshots of the pages checked are saved
in the temporary folder (``shots/``).

Needs the docs extra (``pip install -e ".[docs]"``: mkdocs and playwright) and Chromium
(``apt-get install chromium`` on Debian and Ubuntu); skipped, saying so, without them
(failed instead with ``SLP_DOCS_REQUIRED=1``, as in CI).
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

pytestmark = pytest.mark.docs


def _skip(reason: str):
    """Skip, or fail where the check is required (``SLP_DOCS_REQUIRED=1``, as in CI)."""
    (pytest.fail if os.environ.get("SLP_DOCS_REQUIRED") == "1" else pytest.skip)(reason)


def _chromium() -> str:
    """The system's Chromium (``$SLP_CHROMIUM`` if set), or skip naming the installs."""
    missing = [m for m in ("mkdocs", "playwright") if importlib.util.find_spec(m) is None]
    if missing:
        _skip(
            f"{' and '.join(missing)} not installed: pip install -e '.[docs]' "
            "(or pip install mkdocs-material mkdocstrings[python] mkdocs-jupyter playwright)"
        )
    found = os.environ.get("SLP_CHROMIUM") or next(
        (p for p in map(shutil.which, CHROMIUM_NAMES) if p), None
    )
    if found is None:
        _skip("no Chromium on this machine: apt-get install chromium (Debian, Ubuntu)")
    return found


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site: ``(base_url, site_dir, shots_dir, chromium)``."""
    chromium = _chromium()
    out = tmp_path_factory.mktemp("docs")
    site_dir = out / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log[-5000:]}"
    assert "WARNING" not in log, log[-5000:]
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", site_dir, out / "shots", chromium
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=site[3], args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Visit:
    """A page opened in a fresh browser context, with every error it produced."""

    def __init__(self, browser, site, path: str, shot: str | None = None):
        base, _, shots, _ = site
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on(
            "requestfailed", lambda r: self.errors.append(f"failed ({r.failure}): {r.url}")
        )
        self.page.on(
            "response",
            lambda r: self.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
        )
        host = urlsplit(base).netloc
        self.base = base
        self.page.route("**/*", functools.partial(self._local_only, host))
        self.goto(path)
        if shot is not None:
            shots.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(shots / f"{shot}.png"))

    def goto(self, path: str, *, idle: bool = True) -> None:
        """Opens ``path``; "load" waits for its images, ``idle`` also for its scripts' requests."""
        self.page.goto(self.base + path, wait_until="load")
        if idle:
            self.page.wait_for_load_state("networkidle")

    def _console(self, msg):
        if msg.type == "error":
            self.errors.append(f"console error: {msg.text}")

    def _local_only(self, host, route):
        url = urlsplit(route.request.url)
        if url.scheme in ("data", "blob") or url.netloc == host:
            route.continue_()
        else:
            self.errors.append(f"request to the network: {route.request.url}")
            route.abort()

    def close(self):
        if self.context is not None:
            self.context.close()
            self.context = None


@pytest.fixture
def visit(browser, site):
    opened = []

    def open_(path: str, shot: str | None = None) -> Visit:
        v = Visit(browser, site, path, shot)
        opened.append(v)
        return v

    yield open_
    for v in opened:
        v.close()


@pytest.mark.parametrize(
    ("path", "shot", "selector"),
    [
        ("/", "home", "h1"),
        ("/api/slp/#slp.insens", "api_insens", "[id='slp.insens']"),
        ("/notebooks/02_insens/", "notebook_02", ".jupyter-wrapper .jp-OutputArea"),
        ("/results/mnist-noise/", "results_mnist_noise", "img"),
    ],
)
def test_page_loads_without_errors(visit, path, shot, selector):
    v = visit(path, shot)
    assert v.page.locator(selector).count() > 0, f"{path}: nothing matches {selector!r}"
    assert not v.errors, f"{path}:\n" + "\n".join(v.errors)


def test_api_entry_of_insens_has_its_documentation(visit):
    v = visit("/api/slp/")
    entry = v.page.locator("[id='slp.insens']").locator("xpath=..")
    text = entry.inner_text()
    assert "slp.insens" in text
    body = v.page.locator("body").inner_text()
    for part in ("Inactive state sensitivity", "probes", "by_layer", "Returns"):
        assert part in body, f"the API page lacks {part!r}"


@pytest.mark.parametrize(
    ("path", "shot"),
    [("/guide/slp-and-insens/", "maths"), ("/notebooks/02_insens/", None)],
)
def test_maths_renders(visit, path, shot):
    """KaTeX turned the page's TeX into its own markup, without a parse error."""
    v = visit(path, shot)
    assert v.page.locator(".katex").count() >= 5, f"{path}: maths not rendered by KaTeX"
    assert v.page.locator(".katex-error").count() == 0, f"{path}: KaTeX could not parse"
    assert not v.errors, "\n".join(v.errors)


def test_search_finds_insens_plan(visit, site):
    v = visit("/")
    page = v.page
    box = page.locator("input.md-search__input")  # in the header at a desktop width
    box.click()
    box.press_sequentially("insens_plan")
    results = page.locator(".md-search-result__item")
    results.first.wait_for(timeout=20_000)
    site[2].mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(site[2] / "search.png"))
    assert "insens_plan" in page.locator(".md-search-result").inner_text()
    assert not v.errors, "\n".join(v.errors)


def _results_pages(site_dir: Path) -> list[str]:
    return sorted(
        "/" + p.parent.relative_to(site_dir).as_posix() + "/"
        for p in (site_dir / "results").glob("*/index.html")
    )


def test_every_image_on_the_results_pages_loads(visit, site):
    pages = _results_pages(site[1])
    assert len(pages) >= 9, pages
    tags = sum(
        (site[1] / p.strip("/") / "index.html").read_text(encoding="utf-8").count("<img ")
        for p in pages
    )
    broken, seen = [], 0
    v = visit(pages[0])
    for path in pages:
        v.errors.clear()
        v.goto(path, idle=False)
        images = v.page.evaluate(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])"
        )
        seen += len(images)
        broken += [f"{path}: {src}" for src, width in images if not width]
        # leaving a page cancels its background requests (search index, favicon): not errors
        broken += [f"{path}: {e}" for e in v.errors if "ERR_ABORTED" not in e]
    assert seen == tags and seen >= 10, f"{seen} images in the browser, {tags} in the HTML"
    assert not broken, "\n".join(broken)


def test_notebook_download_link_serves_the_notebook(visit):
    v = visit("/notebooks/02_insens/")
    href = v.page.locator("p.nb-download a").first.get_attribute("href")
    response = v.page.request.get(v.page.url + href)
    assert response.ok, f"{href}: HTTP {response.status}"
    assert response.json()["nbformat"] == 4


def test_every_public_name_has_an_api_entry(site):
    """Each name of slp's docstring list has an entry (an anchor) in the API reference; a
    top-level name documented in its module (``slp.attribute``) counts there."""
    import importlib.util
    import re

    import slp

    path = ROOT / "tests" / "packaging" / "test_public_api.py"
    spec = importlib.util.spec_from_file_location("_public_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ids: set[str] = set()
    for page in (site[1] / "api").rglob("index.html"):
        ids |= set(re.findall(r'id="(slp[\w.]*)"', page.read_text(encoding="utf-8")))
    missing = [
        f"{mod}.{name}"
        for mod, names in module.listed_names(slp.__doc__).items()
        for name in names
        if f"{mod}.{name}" not in ids
        and not (mod == "slp" and any(i.endswith(f".{name}") for i in ids))
    ]
    assert not missing, f"public names without an API entry: {missing}"
