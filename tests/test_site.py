"""The documentation site: it builds with no warning, its links resolve, its
notebooks ran, and a real browser renders its math with a clean console.

The site is built once per test session, with README's command (Sphinx,
``-W --keep-going -n``), into a temporary folder; every test here reads that
build. The browser is Debian's Chromium driven by its ChromeDriver through
Selenium (.ci/run installs both); the pages are served from 127.0.0.1.
"""
import functools
import http.server
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import radref

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTEBOOKS = ("tutorial", "theorem1", "exercises", "exercises-instructor", "port")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: pages the browser opens: heavy math, a notebook with figures, an API page
BROWSER_PAGES = ("model.html", "derivations.html", "tutorial.html", "notebooks/theorem1.html",
                 "reference/generated/radref.reference.theory.html")


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """Build the site (README's command, into a temporary folder); its html folder."""
    out = tmp_path_factory.mktemp("site")
    html = out / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-b", "html",
         "-d", str(out / "doctrees"), str(DOCS), str(html)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"the site does not build:\n{log[-6000:]}"
    # -W fails on any warning; this also catches one printed after the build
    warnings = [line for line in log.splitlines()
                if re.search(r"\b(WARNING|ERROR)\b", line) and "IPKernelApp" not in line]
    assert not warnings, "\n".join(warnings)
    return html


class _PageParser(HTMLParser):
    """Links (with their classes and texts), sources and ids of one HTML page."""

    def __init__(self):
        super().__init__()
        self.urls, self.ids, self.links = [], set(), []
        self._open = []  # the <a> elements being read: [classes, href, text]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and "name" in attrs:
            self.ids.add(attrs["name"])
        if tag == "a":
            classes = (attrs.get("class") or "").split()
            if "download" in attrs:  # <a download>, written as HTML in a page
                classes.append("download")
            self._open.append([classes, attrs.get("href"), ""])
        for name in ("href", "src"):
            if attrs.get(name) is not None and tag in ("a", "link", "img", "script", "source"):
                self.urls.append((tag, attrs[name]))

    def handle_data(self, data):
        for link in self._open:
            link[2] += data

    def handle_endtag(self, tag):
        if tag == "a" and self._open:
            classes, href, text = self._open.pop()
            self.links.append((classes, href, " ".join(text.split())))


@functools.lru_cache(maxsize=None)
def _parse(page):
    parser = _PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _pages(site):
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)


def test_every_page_of_the_docs_folder_is_on_the_site(site):
    expected = {p.relative_to(DOCS).with_suffix(".html") for p in DOCS.rglob("*.md")
                if not ({"_build", "_vendor", "jupyter_execute"} & set(p.parts))}
    missing = [str(p) for p in expected if not (site / p).is_file()]
    assert not missing
    assert len(expected) >= 20


def _broken_links(site):
    """Relative links and sources of the pages of ``site`` that do not resolve
    to a file of the site, or to an element id of the page they name; and
    how many were checked."""
    broken, checked = [], 0
    for page in _pages(site):
        for tag, url in _parse(page).urls:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                continue  # another host: not loaded by the pages (see the browser test)
            checked += 1
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or site.resolve() not in [target, *target.parents]:
                broken.append(f"{page.relative_to(site)}: <{tag}> {url} (no such file)")
            elif parts.fragment and target.suffix == ".html" \
                    and unquote(parts.fragment) not in _parse(target).ids:
                broken.append(f"{page.relative_to(site)}: <{tag}> {url} (no such anchor)")
    return broken, checked


def test_every_relative_link_and_image_resolves(site):
    broken, checked = _broken_links(site)
    assert not broken, "\n".join(broken)
    assert checked > 1000  # the check saw the site's links


def test_the_link_check_finds_dead_links_and_anchors(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.html").write_text(
        '<p id="here"><a href="b.html">dead</a> <a href="#gone">dead anchor</a> '
        '<a href="a.html#here">fine</a> <a href="sub/c.html#top">fine</a> '
        '<img src="sub/missing.png"> <a href="../outside.html">outside</a> '
        '<a href="https://example.org/x">another host</a></p>', encoding="utf-8")
    (tmp_path / "sub" / "c.html").write_text('<h1 id="top">c</h1><a href="../a.html#here">'
                                             'fine</a>', encoding="utf-8")
    (tmp_path.parent / "outside.html").write_text("not part of the site", encoding="utf-8")
    broken, checked = _broken_links(tmp_path)
    assert checked == 7
    assert broken == ["a.html: <a> b.html (no such file)",
                      "a.html: <a> #gone (no such anchor)",
                      "a.html: <img> sub/missing.png (no such file)",
                      "a.html: <a> ../outside.html (no such file)"]


#: a link text that is a file's name or path: readers of the site see pages
FILE_NAME = re.compile(r"[\w./-]*\w\.(md|py|ipynb|html)(#[\w-]*)?|[\w.-]+/")


def _file_named_links(site):
    """Links of the site's pages whose text is a file name, except downloads
    (a download link's text is the file it gets)."""
    found = []
    for page in _pages(site):
        for classes, href, text in _parse(page).links:
            if "download" not in classes and href and FILE_NAME.fullmatch(text.strip("`")):
                found.append(f"{page.relative_to(site)}: {text} -> {href}")
    return found


def test_links_are_labelled_with_words_not_file_names(site):
    found = _file_named_links(site)
    assert not found, "\n".join(found)
    # the links to the pages, and to the modules' reference, are all there
    index = _parse(site / "index.html").links
    assert {"Model", "Derivations", "Tutorial", "Notebooks", "API reference", "This site"} <= \
        {text for classes, href, text in index if "internal" in classes}
    texts = {text for classes, href, text in index if "internal" in classes}
    assert "radref.training.hyperparameters" in texts  # a module page, not a .py path


def test_the_file_name_check_finds_them(tmp_path):
    (tmp_path / "a.html").write_text(
        '<a class="reference internal" href="model.html">model.md</a> '
        '<a class="reference internal" href="m.html"><code>core/slopes.py</code></a> '
        '<a class="reference internal" href="nb/index.html">notebooks/</a> '
        '<a class="reference internal" href="model.html">Model</a> '
        '<a class="reference internal" href="m.html"><code>radref.core.slopes</code></a> '
        '<a class="reference download internal" href="t.py">tests/test_x.py</a> '
        '<a href="x.ipynb" download>x.ipynb</a>',
        encoding="utf-8")
    assert _file_named_links(tmp_path) == ["a.html: model.md -> model.html",
                                           "a.html: core/slopes.py -> m.html",
                                           "a.html: notebooks/ -> nb/index.html"]


def _build_without_mathjax(tmp_path, npm_script=None):
    """Run README's build command on a copy of docs/conf.py with nothing
    vendored yet, and a PATH on which npm is absent (or is ``npm_script``)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DOCS / "conf.py", docs / "conf.py")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if npm_script is not None:
        (bin_dir / "npm").write_text(npm_script, encoding="utf-8")
        (bin_dir / "npm").chmod(0o755)
    env = dict(os.environ, PATH=str(bin_dir))
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-b",
                           "html", str(docs), str(tmp_path / "html")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _said(result):
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def test_a_build_without_npm_says_so_in_one_message(tmp_path):
    result = _build_without_mathjax(tmp_path)
    said = _said(result)
    assert result.returncode == 2, said
    assert "npm is not on the PATH" in result.stderr and "apt-get install npm" in result.stderr
    # the message alone: not Sphinx's "Configuration error!" report with a traceback
    assert "Traceback" not in result.stderr and "Configuration error" not in result.stderr
    assert len(said) <= 4, said
    assert not (tmp_path / "html").exists()


def test_a_failed_mathjax_fetch_says_what_npm_said(tmp_path):
    result = _build_without_mathjax(tmp_path, "#!/bin/sh\n"
                                    "echo 'npm error code ENOTFOUND' >&2\n"
                                    "echo 'npm error network request failed' >&2\nexit 1\n")
    said = _said(result)
    assert result.returncode == 2, said
    assert "npm pack mathjax@" in result.stderr and "npm error code ENOTFOUND" in result.stderr
    assert "npm registry" in result.stderr
    assert "Traceback" not in result.stderr and len(said) <= 7, said


def _public_modules():
    names = []
    for info in pkgutil.walk_packages(radref.__path__, "radref."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def test_the_api_reference_has_a_page_per_module_with_its_functions(site):
    modules = _public_modules()
    assert {"radref.core.slopes", "radref.training.train", "radref.reference.theory",
            "radref.user.estimators", "radref.datasets", "radref.checks"} <= set(modules)
    for name in modules:
        page = site / "reference" / "generated" / f"{name}.html"
        assert page.is_file(), name
        module = importlib.import_module(name)
        ids = _parse(page).ids
        documented = [attr for attr, obj in vars(module).items()
                      if not attr.startswith("_") and callable(obj)
                      and getattr(obj, "__module__", None) == name and obj.__doc__]
        missing = [attr for attr in documented if f"{name}.{attr}" not in ids]
        assert not missing, f"{name}: not in the reference: {missing}"


def _text(page):
    return re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))


def test_every_notebook_ran_and_shows_its_outputs(site):
    for name in NOTEBOOKS:
        page = site / "notebooks" / f"{name}.html"
        html = page.read_text(encoding="utf-8")
        assert "cell_output" in html, name
        assert "Traceback" not in html, name
    instructor = _text(site / "notebooks" / "exercises-instructor.html")
    for n in range(1, 11):
        assert f"exercise {n}: correct" in instructor
    assert re.search(r"10 passed", instructor)  # tests/test_exercises.py, run by the notebook
    student = _text(site / "notebooks" / "exercises.html")
    assert sorted(map(int, re.findall(r"exercise (\d+): not answered yet", student))) \
        == list(range(1, 11))
    assert "13 / 5" not in student and "def caption" not in student  # no solution leaked
    assert "PASS: 3 fields" in _text(site / "notebooks" / "port.html")
    assert "test mean log-likelihood" in _text(site / "notebooks" / "tutorial.html")
    for name, figures in (("tutorial", 4), ("theorem1", 2)):
        images = [url for tag, url in _parse(site / "notebooks" / f"{name}.html").urls
                  if tag == "img" and url.endswith(".png")]
        assert len(images) >= figures, name


def test_each_notebook_is_offered_as_ipynb_without_outputs(site):
    for name in NOTEBOOKS:
        notebook = json.loads((site / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
        code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
        assert notebook["nbformat"] == 4 and len(code) >= 3, name
        assert all(not cell.get("outputs") for cell in code), name


def test_the_pages_show_the_figures(site):
    images = {Path(url).name for page in _pages(site) for tag, url in _parse(page).urls
              if tag == "img"}
    for figure in ("fig08_smoothing", "fig08_theorem1", "fig11_samples", "performance_scaling"):
        assert any(name.startswith(figure) for name in images), figure


# ---------------------------------------------------------------- in a browser

@pytest.fixture(scope="session")
def served(site):
    """The built site on a local web server: its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    # headless as root, and none of Chromium's own network traffic (this
    # machine has no network beyond the package registries)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(browser, url):
    """Load ``url`` and wait until MathJax has typeset the page."""
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(url)
    # MathJax loads asynchronously: on a loaded machine it may start after the page's
    # load event, so wait for it (up to 30 s) before waiting for its typesetting
    typeset = browser.execute_async_script(
        "const done = arguments[arguments.length - 1]; const start = Date.now();"
        "(function wait() {"
        "  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {"
        "    MathJax.startup.promise.then(() => done('ok'), e => done('failed: ' + e));"
        "    return; }"
        "  if (Date.now() - start > 30000) { done('no MathJax'); return; }"
        "  setTimeout(wait, 100); })();")
    assert typeset == "ok", f"{url}: {typeset}"


@pytest.mark.parametrize("page", BROWSER_PAGES)
def test_the_browser_renders_the_math_and_logs_no_error(browser, served, page):
    _open(browser, served + page)
    math = browser.find_elements("css selector", ".math")
    rendered = browser.find_elements("css selector", "mjx-container")
    assert math, page  # the page has math to render
    # every math element became typeset MathJax output, none is a TeX error
    assert browser.execute_script(
        "return [...document.querySelectorAll('.math')]"
        ".filter(e => !e.querySelector('mjx-container')).length") == 0, page
    assert len(rendered) >= len(math)
    assert not browser.find_elements("css selector", "mjx-merror"), page
    text = browser.find_element("tag name", "article").text
    for delimiter in ("$$", "\\(", "\\[", "\\begin{"):
        assert delimiter not in text, f"{page}: raw {delimiter} in the rendered text"
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, f"{page}: console errors: {errors}"
    # and nothing was fetched from another host
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(url.startswith(served) for url in resources), resources


def test_the_browser_shows_the_notebook_figures(browser, served):
    _open(browser, served + "notebooks/tutorial.html")
    loaded = browser.execute_script(
        "return [...document.querySelectorAll('.cell_output img')]"
        ".map(img => img.complete && img.naturalWidth > 100)")
    assert len(loaded) >= 4 and all(loaded)
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_the_navigation_bar_shows_the_main_pages_outside_more(browser, served):
    _open(browser, served + "index.html")
    links = browser.execute_script(
        "return [...document.querySelectorAll('.bd-header .navbar-header-items .navbar-nav "
        "> li.nav-item > a.nav-link')]"
        ".filter(a => !a.closest('.dropdown-menu') && a.offsetParent !== null)"
        ".map(a => [a.textContent.trim(), Math.round(a.getBoundingClientRect().top)])")
    texts = [text for text, top in links]
    for page in ("Model", "Tutorial", "Notebooks", "User API", "API reference"):
        assert page in texts, links
    assert len({top for text, top in links}) == 1, links  # one line: nothing wrapped
    # the search field stays on that line down to a window 1100 pixels wide (docs/conf.py)
    size = browser.get_window_size()
    try:
        for width in (1400, 1100):
            browser.set_window_size(width, size["height"])
            links_bottom, search_top = browser.execute_script(
                "const box = c => document.querySelector('.bd-header ' + c)"
                ".getBoundingClientRect();"
                "return [box('.navbar-header-items__center').bottom,"
                "        box('.navbar-header-items__end').top]")
            assert search_top < links_bottom, f"{width} px: the search field is on a line below"
    finally:
        browser.set_window_size(size["width"], size["height"])
    more = browser.find_elements("css selector", ".bd-header .navbar-header-items .dropdown-menu a")
    hidden = {a.get_attribute("textContent").strip() for a in more}
    assert {"Derivations", "Results"} <= hidden
    assert not {"Tutorial", "Notebooks", "API reference"} & hidden


@pytest.mark.parametrize("page", ["notebooks/port.html", "notebooks/tutorial.html"])
def test_notebook_code_is_wrapped_not_clipped(browser, served, page):
    _open(browser, served + page)
    boxes = "[...document.querySelectorAll('div.cell div.cell_input pre, div.cell div.cell_output pre')]"
    # no code or output box is wider inside than it shows
    clipped = browser.execute_script(
        f"return {boxes}.filter(pre => pre.scrollWidth > pre.clientWidth + 1)"
        ".map(pre => pre.textContent.slice(0, 80))")
    assert not clipped, clipped
    # and the page has lines that would be clipped without the site's CSS
    long_lines = browser.execute_script(
        f"return {boxes}.filter(pre => {{"
        "  pre.style.whiteSpace = 'pre';"
        "  const over = pre.scrollWidth > pre.clientWidth + 1;"
        "  pre.style.whiteSpace = ''; return over; }).length")
    assert long_lines > 0

