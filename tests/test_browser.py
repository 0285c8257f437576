"""The built book in a real browser: headless Chromium renders the index and a chapter from a
localhost server, MathJax (served locally) typesets every equation, and no request leaves
the machine. Screenshots go to test-artifacts/browser/ for a human to look at."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import REPO, BookBuild

from sgdnoise.report import PLAIN_SUBSCRIPT

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "test-artifacts" / "browser"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--no-pings", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=10000", "--window-size=1280,1800",
]


def find_chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome"),
                      shutil.which("google-chrome-stable")):  # GitHub's runners have Chrome
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("headless Chromium not found (install the Debian package: "
                    "apt-get install -y chromium)")
    return path


@dataclass
class Server:
    base: str
    requests: list[str]


@pytest.fixture(scope="module")
def server(smoke_book: BookBuild) -> Iterator[Server]:
    """The built HTML over http://127.0.0.1:<port>, recording every request path."""
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            requests.append(self.path)

        def do_GET(self) -> None:  # noqa: N802
            """HTML pages get the measuring script (:data:`MEASURE_JS`) before </body>."""
            path = Path(self.translate_path(self.path))
            if path.suffix != ".html" or not path.is_file():
                super().do_GET()
                return
            body = path.read_bytes().replace(
                b"</body>", b"<script>" + MEASURE_JS.encode() + b"</script></body>", 1)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.log_message("%s", self.path)

    handler = functools.partial(Handler, directory=str(smoke_book.html))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    finally:
        httpd.shutdown()
        httpd.server_close()


# Runs in the page once MathJax has typeset it and the images have loaded: measures every
# display equation against its container, collects text outside typeset math that looks
# like TeX, text outside math and code that writes a subscript as plain text
# (sgdnoise.report.PLAIN_SUBSCRIPT: g_B, λ_max, B_noise), and every notebook figure's natural
# and displayed width. The result is written, base64-encoded JSON, into
# <script id="sgdnoise-measure"> where --dump-dom shows it.
MEASURE_JS = r"""
(function () {
  function report() {
    var out = {equations: [], rawtex: [], subscripts: [], texerrors: [], images: [],
               formulas: [], column: 0};
    var article = document.querySelector("article") || document.body;
    out.column = article.getBoundingClientRect().width;
    document.querySelectorAll('mjx-container[display="true"]').forEach(function (m) {
      var box = m.closest("div.math") || m.parentElement;
      var inner = m.querySelector("mjx-math");
      var width = Math.max(m.scrollWidth, inner ? inner.getBoundingClientRect().width : 0);
      out.equations.push({id: (box && box.id) || "", width: width,
                          container: Math.min(m.clientWidth, box.clientWidth),
                          tex: (m.getAttribute("aria-label") || m.textContent).slice(0, 80)});
    });
    // a docstring's formula block on an API page (book/_ext/sgdnoise_apidoc.py)
    document.querySelectorAll("div.sgdnoise-formula pre").forEach(function (pre) {
      out.formulas.push({width: pre.scrollWidth, container: pre.clientWidth,
                         text: pre.textContent.trim().slice(0, 80)});
    });
    // TeX that MathJax could not read: an error box (merror), or an unknown command that
    // its noundefined extension shows as red text
    var st = window.MathJax && MathJax.startup;
    if (st && st.document && st.toMML) {
      Array.from(st.document.math).forEach(function (item) {
        var mml = st.toMML(item.root);
        if (/<merror|mathcolor="red"/.test(mml)) out.texerrors.push(String(item.math).slice(0, 80));
      });
    } else {
      document.querySelectorAll("mjx-merror").forEach(function (e) {
        out.texerrors.push(e.getAttribute("data-mjx-error") || e.textContent.slice(0, 80));
      });
    }
    var skip = /^(SCRIPT|STYLE|PRE|CODE|KBD|SAMP|TEXTAREA|MJX-CONTAINER|NOSCRIPT)$/;
    var walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
    var tex = /\$|\\[a-zA-Z]+|[_^]\{/;  // $, \command, or TeX's _{...} and ^{...}
    var sub = new RegExp(__PLAIN_SUBSCRIPT__, "g");
    for (var n = walker.nextNode(); n; n = walker.nextNode()) {
      var el = n.parentElement, hidden = false, literal = false;
      for (var a = el; a && a !== article; a = a.parentElement) {
        if (skip.test(a.tagName) || a.classList.contains("highlight")) { hidden = true; break; }
        // Sphinx writes an API signature's names and a literal's words in span.pre, and a
        // signature in dt.sig: identifiers (n_train, z_max), not math.
        if (a.classList.contains("pre") || a.classList.contains("sig")) literal = true;
      }
      if (hidden) continue;
      var text = n.nodeValue.trim().slice(0, 120);
      // code (an attribute's value in a signature, a literal) is not math, whatever it holds
      if (!literal && tex.test(n.nodeValue)) { out.rawtex.push(text); continue; }
      var found = literal ? null : n.nodeValue.match(sub);
      if (found) out.subscripts.push({found: found, text: text});
    }
    document.querySelectorAll(".cell_output img, figure img, img.sgdnoise-figure")
      .forEach(function (img) {
        var r = img.getBoundingClientRect();
        var fig = img.closest("figure");
        out.images.push({src: img.getAttribute("src"), url: img.currentSrc || img.src,
                         natural: img.naturalWidth, displayed: r.width,
                         captioned: !!(fig && fig.querySelector("figcaption .caption-number"))});
      });
    // content a reader can only reach by scrolling sideways: a box that scrolls (or a table
    // that runs out of its box), code and math left out (the checks above measure math)
    var code = "pre, .highlight, mjx-container, div.math, .sgdnoise-formula";
    out.scrolls = [];
    article.querySelectorAll("*").forEach(function (el) {
      if (el.closest(code)) return;
      var ox = getComputedStyle(el).overflowX;
      var clipped = (ox === "auto" || ox === "scroll") ? el.scrollWidth > el.clientWidth + 2
        : (el.tagName === "TABLE" && el.getBoundingClientRect().right
           > article.getBoundingClientRect().right + 2);
      if (clipped) out.scrolls.push({tag: el.tagName.toLowerCase(), width: el.scrollWidth,
        box: el.clientWidth, text: el.textContent.trim().replace(/\s+/g, " ").slice(0, 80)});
    });
    out.page = {width: document.documentElement.scrollWidth, viewport: window.innerWidth};
    out.cells = [];
    article.querySelectorAll("td, th").forEach(function (c) {
      if (!c.closest(code)) out.cells.push(c.textContent.trim().replace(/\s+/g, " "));
    });
    var s = document.createElement("script");
    s.type = "application/json";
    s.id = "sgdnoise-measure";
    s.textContent = btoa(unescape(encodeURIComponent(JSON.stringify(out))));
    document.body.appendChild(s);
  }
  window.addEventListener("load", function () {
    var ready = (window.MathJax && MathJax.startup && MathJax.startup.promise)
      ? MathJax.startup.promise : Promise.resolve();
    ready.then(function () { setTimeout(report, 200); });
  });
})();
""".replace("__PLAIN_SUBSCRIPT__", json.dumps(PLAIN_SUBSCRIPT))


@dataclass
class Rendered:
    dom: str
    screenshot: Path
    page_requests: list[tuple[str, str]]  # (url, initiator) of requests the page made

    def measure(self) -> dict:
        """What :data:`MEASURE_JS` found on the page."""
        import base64

        m = re.search(r'<script type="application/json" id="sgdnoise-measure">([^<]*)</script>',
                      self.dom)
        assert m, "the measuring script did not report (MathJax or the page did not finish)"
        return json.loads(base64.b64decode(m.group(1)).decode())


def render(chromium: str, url: str, name: str, tmp_path: Path) -> Rendered:
    """Load ``url`` in a fresh headless profile: the DOM after scripts ran, a screenshot
    and the requests recorded in Chromium's net log."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    netlog = tmp_path / f"{name}.netlog.json"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / f'profile-{name}'}",
           f"--log-net-log={netlog}", f"--screenshot={shot}", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return Rendered(proc.stdout, shot, page_requests(netlog))


def page_requests(netlog: Path) -> list[tuple[str, str]]:
    """(url, initiator) of every URL request started on behalf of a page. Chromium's own
    background requests (updates, account checks) carry no page origin and are left out;
    they are refused by --host-resolver-rules anyway."""
    text = netlog.read_text()
    try:
        log = json.loads(text)
    except ValueError:  # a log cut short: close the events list
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    out = []
    for event in log.get("events", []):
        if names.get(event.get("type")) != "URL_REQUEST_START_JOB":
            continue
        params = event.get("params", {})
        initiator = str(params.get("initiator", ""))
        isolation = str(params.get("network_isolation_key", ""))
        if "127.0.0.1" in initiator or "127.0.0.1" in isolation:
            out.append((str(params.get("url", "")), initiator))
    return out


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in LOCAL_HOSTS


class _VisibleText(HTMLParser):
    """Text outside script/style/code blocks (where raw TeX would show if MathJax failed)."""

    SKIP = {"script", "style", "pre", "code", "mjx-assistive-mml", "textarea"}

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.chunks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.chunks.append(data)


def visible_text(dom: str) -> str:
    parser = _VisibleText()
    parser.feed(dom)
    return "".join(parser.chunks)


def count_math(static_html: str) -> int:
    return len(re.findall(r'class="math notranslate nohighlight"', static_html))


def check_typeset(rendered: Rendered, static_html: str, server: Server) -> None:
    n_math = count_math(static_html)
    n_typeset = rendered.dom.count("<mjx-container")
    assert n_math > 0, "the page has no math to typeset"
    assert n_typeset >= n_math, f"MathJax typeset {n_typeset} of {n_math} formulas"
    text = visible_text(rendered.dom)
    for raw in ("$$", "\\[", "\\(", "\\begin{"):
        assert raw not in text, f"raw TeX {raw!r} left in the rendered text"
    assert any("/_static/mathjax/" in path for path in server.requests), (
        "MathJax was not loaded from the local _static folder")
    remote = [(u, i) for u, i in rendered.page_requests if not is_local(u)]
    assert not remote, f"the page requested remote resources: {remote}"
    assert rendered.page_requests, "the net log recorded no page requests at all"
    assert rendered.screenshot.is_file() and rendered.screenshot.stat().st_size > 10_000


def test_index_renders_with_typeset_math(chromium, server, smoke_book, tmp_path):
    rendered = render(chromium, server.base + "/", "index", tmp_path)
    assert "structure of SGD" in rendered.dom  # index.html forwards to the introduction
    check_typeset(rendered, (smoke_book.html / "intro.html").read_text(), server)
    assert 'id="equation-eq-intro-cov"' in rendered.dom


def test_chapter_renders_with_math_figures_and_provenance(chromium, server, smoke_book,
                                                          tmp_path):
    name = smoke_book.chapters[0]
    rendered = render(chromium, f"{server.base}/chapters/{name}.html", name, tmp_path)
    check_typeset(rendered, (smoke_book.html / "chapters" / f"{name}.html").read_text(),
                  server)
    assert re.search(r"<img[^>]+_images/", rendered.dom), "no figure on the page"
    assert "git commit" in rendered.dom and "wall time" in rendered.dom
    served_images = [p for p in server.requests if p.startswith("/_images/")]
    assert served_images, "the figures were not fetched from the local server"


# --------------------------------------------------- static scan: nothing remote to fetch

FETCHING = {  # tag -> attributes whose URL the browser fetches on load
    "script": ("src",), "img": ("src", "srcset"), "iframe": ("src",), "source": ("src", "srcset"),
    "video": ("src", "poster"), "audio": ("src",), "embed": ("src",), "object": ("data",),
    "input": ("src",),
}
FETCHING_LINK_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon",
                      "shortcut icon", "apple-touch-icon", "manifest", "preconnect",
                      "dns-prefetch"}
REMOTE = re.compile(r"^\s*(https?:)?//", re.I)


class _Fetches(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "link" and a.get("rel", "").lower() in FETCHING_LINK_RELS:
            self.urls.append(a.get("href", ""))
        for attr in FETCHING.get(tag, ()):
            if attr == "srcset":
                self.urls += [part.strip().split(" ")[0] for part in a.get(attr, "").split(",")]
            elif attr in a:
                self.urls.append(a[attr])
        if tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            self.urls.append(a.get("content", "").partition("url=")[2])


CSS_REMOTE = re.compile(r"""(@import\s+(url\()?|url\()\s*['"]?\s*(https?:)?//""", re.I)
JS_REMOTE = re.compile(
    r"""(\bimport\s*\(|\bimportScripts\s*\(|\bfetch\s*\(|\.src\s*=|\bsrc\s*:)\s*['"`](https?:)?//""",
    re.I)
# Scripts that name a remote URL only behind a user action that this book never offers
# (sphinx-thebe's launch button is switched off in _config.yml).
JS_ALLOWED = {"sphinx-thebe.js"}


def test_built_html_references_no_remote_resources(smoke_book: BookBuild):
    problems = []
    for path in sorted(smoke_book.html.rglob("*")):
        rel = path.relative_to(smoke_book.html).as_posix()
        if path.suffix == ".html":
            parser = _Fetches()
            parser.feed(path.read_text(errors="replace"))
            problems += [f"{rel}: {u}" for u in parser.urls if REMOTE.match(u)]
        elif path.suffix == ".css":
            problems += [f"{rel}: {m.group(0)}"
                         for m in CSS_REMOTE.finditer(path.read_text(errors="replace"))]
        elif path.suffix == ".js" and path.name not in JS_ALLOWED and "mathjax" not in rel:
            problems += [f"{rel}: {m.group(0)}"
                         for m in JS_REMOTE.finditer(path.read_text(errors="replace"))]
    assert not problems, "remote resources referenced:\n" + "\n".join(problems[:30])


# ------------------------------------------- typesetting and figures on every page at 1280 px

MIN_TEXT_PX = 11.0  # the smallest figure text a reader should have to read, in screen pixels
# A table cell that shows a raw Python or NumPy value, or a signed zero, instead of words
# or a number: nan, inf, True/False, -0.00 (issue 19).
# A capitalised True/False that starts a phrase ("True Fisher") is a word, not a value.
RAW_CELL_VALUE = re.compile(r"(?<![\w.])(?:nan|NaN|[-−]?inf|[-−]?Inf|[-−]0\.0+(?![\w.])"
                            r"|(?:True|False)(?!\s*[A-Za-z]))(?![\w.])")


def png_dpi(path: Path) -> float | None:
    """The resolution a PNG file records (its pHYs chunk, in dots per inch), or None."""
    import struct

    data = path.read_bytes()
    pos = 8
    while pos + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        if kind == b"pHYs":
            x, _, unit = struct.unpack(">IIB", data[pos + 8:pos + 17])
            return x * 0.0254 if unit == 1 else None
        if kind == b"IDAT":
            return None
        pos += 12 + length
    return None


def image_dpi(img: dict, html: Path | None) -> float:
    """The resolution of a measured figure's PNG (served from ``html``), else the page's
    :data:`sgdnoise.plotting.DPI`."""
    from sgdnoise.plotting import DPI

    path = html / urlsplit(img.get("url") or "").path.lstrip("/") if html else None
    dpi = png_dpi(path) if path is not None and path.suffix == ".png" and path.is_file() \
        else None
    return dpi or DPI


def _math_problems(measure: dict) -> list[str]:
    problems = [f"display equation {eq['id'] or eq['tex']!r} is {eq['width']:.0f} px wide in "
                f"a {eq['container']:.0f} px container" for eq in measure["equations"]
                if eq["width"] > eq["container"] + 1]
    problems += [f"formula block {f['text']!r} is {f['width']:.0f} px wide in a "
                 f"{f['container']:.0f} px column" for f in measure.get("formulas", [])
                 if f["width"] > f["container"] + 1]
    problems += [f"raw TeX outside typeset math: {text!r}" for text in measure["rawtex"]]
    problems += [f"plain-text subscript {', '.join(s['found'])} outside math: {s['text']!r}"
                 for s in measure["subscripts"]]
    return problems + [f"MathJax could not typeset: {e}" for e in measure["texerrors"]]


def _figure_problems(measure: dict, html: Path | None) -> list[str]:
    from sgdnoise.plotting import MIN_FONT_PT, rendered_text_px

    problems = []
    for img in measure["images"]:
        if not img["natural"]:
            problems.append(f"figure {img['src']} did not load")
            continue
        if not img["captioned"]:
            problems.append(f"figure {img['src']} has no numbered caption")
        dpi = image_dpi(img, html)
        px = rendered_text_px(MIN_FONT_PT, img["displayed"], img["natural"], dpi)
        if px < MIN_TEXT_PX:
            problems.append(f"figure {img['src']}: {img['natural']} px at {dpi:.0f} dpi shown "
                            f"at {img['displayed']:.0f} px, so its {MIN_FONT_PT:g} pt text "
                            f"renders {px:.1f} px (< {MIN_TEXT_PX:g} px)")
    return problems


def _table_problems(measure: dict) -> list[str]:
    problems = [f"sideways scroll: a {s['tag']} {s['width']:.0f} px wide in a {s['box']:.0f} px "
                f"box: {s['text']!r}" for s in measure.get("scrolls", [])]
    page = measure.get("page")
    if page and page["width"] > page["viewport"] + 1:
        problems.append(f"sideways scroll: the page is {page['width']} px wide in a "
                        f"{page['viewport']} px window")
    raw = sorted({cell for cell in measure.get("cells", []) if RAW_CELL_VALUE.search(cell)})
    problems += [f"table cell shows a raw value: {cell[:80]!r}" for cell in raw]
    return problems


def layout_problems(measure: dict, html: Path | None = None) -> list[str]:
    """What a reader at 1280 px should not meet: display equations wider than their
    container, docstring formula blocks wider than the column, TeX-looking text outside
    typeset math, subscripts written as plain text outside math and code (``g_B``,
    ``λ_max``: they belong in ``$...$``), math MathJax could not typeset (an unknown
    command); figures without a numbered caption or whose smallest text (the style's
    :data:`sgdnoise.plotting.MIN_FONT_PT`, at the resolution the PNG records, scaled as it
    is shown) renders below :data:`MIN_TEXT_PX`; content outside code and math behind a
    sideways scroll (a scrolling box, a table wider than the column, a page wider than the
    window); table cells showing nan, inf, True/False or -0.00 (:data:`RAW_CELL_VALUE`).
    ``html`` is the folder the page is served from (to read the figures' resolution)."""
    return (_math_problems(measure) + _figure_problems(measure, html)
            + _table_problems(measure))


def _book_pages() -> list[str]:
    from conftest import BOOK, load_build_module

    build = load_build_module()
    return [f"{entry}.html" for entry in build._toc_files(build.read_toc(BOOK))]


# Defects of chapter pages that other branches fix (issue 19, items 3-5 per chapter), found
# by the checks below when they were written: page -> the problems (substrings of what
# layout_problems reports) it may still show. A page whose only problems are listed is
# reported as xfail with them; any other problem fails. Remove an entry once its fix is
# merged: from then on the page must pass.
SCROLL, RAW, SMALL_TEXT = "sideways scroll", "table cell shows a raw value", "renders"
KNOWN_DEFECTS: dict[str, tuple[str, ...]] = {
}


def _api_pages() -> list[str]:
    """The API reference's per-module pages, from the package's module list as build.py
    derives them (:func:`test_every_api_page_is_checked` compares them with the build)."""
    from conftest import load_build_module

    return [f"api/{module}.html" for module in load_build_module().api_modules()]


# Pages Sphinx generates besides the toc's. genindex lists every Python name of the API
# (``dl_opt() (sgdnoise...QuadraticStep method)``) as link text, not in code: identifiers by
# construction, so only its TeX is checked there, not its underscores nor the width of its
# two-column tables (a long qualified name widens a column past the text column).
INDEX_PAGES = {"py-modindex.html": "all", "genindex.html": "tex"}


def check_publication(chromium: str, server: Server, smoke_book: BookBuild, tmp_path: Path,
                      page: str, checks: str = "all") -> None:
    """At 1280 px the page passes :func:`layout_problems` (no plain-text subscript check
    when ``checks == "tex"``), apart from its :data:`KNOWN_DEFECTS`. The screenshot goes
    to test-artifacts/browser/<page>.png."""
    if not (smoke_book.html / page).is_file():
        pytest.skip(f"{page} is not in this build")
    name = page.removesuffix(".html").replace("/", "__")
    rendered = render(chromium, f"{server.base}/{page}", name, tmp_path)
    measure = rendered.measure()
    assert measure["column"] > 500, measure["column"]
    if checks == "tex":  # the index: TeX only (its long names make its tables run wide)
        measure.update(subscripts=[], scrolls=[], page=None)
    problems = layout_problems(measure, smoke_book.html)
    known = KNOWN_DEFECTS.get(page, ())
    unknown = [p for p in problems if not any(k in p for k in known)]
    assert not unknown, f"{page}:\n  " + "\n  ".join(unknown)
    if problems:
        pytest.xfail(f"{page} (known, issue 19):\n  " + "\n  ".join(problems))


@pytest.mark.parametrize("page", _book_pages())
def test_page_reads_like_a_publication(chromium, server, smoke_book, tmp_path, page):
    """Every page of the toc passes :func:`check_publication`."""
    check_publication(chromium, server, smoke_book, tmp_path, page)


@pytest.mark.parametrize("page", _api_pages())
def test_api_page_reads_like_a_publication(chromium, server, smoke_book, tmp_path, page):
    """Every module page of the API reference passes :func:`check_publication`: the
    docstrings' math is shown as code (book/_ext/sgdnoise_apidoc.py), never as prose."""
    check_publication(chromium, server, smoke_book, tmp_path, page)


@pytest.mark.parametrize("page", sorted(INDEX_PAGES))
def test_index_page_reads_like_a_publication(chromium, server, smoke_book, tmp_path, page):
    check_publication(chromium, server, smoke_book, tmp_path, page, INDEX_PAGES[page])


def test_every_api_page_is_checked(smoke_book: BookBuild):
    """The pages the API tests visit are the pages the build wrote under html/api/."""
    built = sorted(p.relative_to(smoke_book.html).as_posix()
                   for p in (smoke_book.html / "api").glob("*.html"))
    assert built, "the build wrote no API page"
    assert built == sorted(_api_pages())


PLANTS = {
    "clipped-equation": (
        '<div class="math notranslate nohighlight">\\[ '
        + " + ".join(f"x_{{{i}}}^2" for i in range(1, 160)) + " \\]</div>",
        "display equation"),
    "raw-tex": ("<p>the next iterate $\\theta_{t+1}$ follows</p>", "raw TeX"),
    "raw-tex-command": ("<p>the norm \\lVert g \\rVert of the gradient</p>", "raw TeX"),
    "plain-text-math": ("<p>the iterates obey θ_{t+1} = θ_t − η g_t</p>", "raw TeX"),
    "plain-text-subscript": ("<p>the mini-batch gradient g_B is unbiased, and λ_max sets "
                             "the step</p>", "plain-text subscript g_B, λ_max outside math"),
    "tex-error": ('<p>the step <span class="math notranslate nohighlight">\\(\\notamacro '
                  'x_t\\)</span> diverges</p>', "MathJax could not typeset"),
    "parameter-name-as-prose": ('<dl class="field-list"><dt>Parameters:</dt><dd><p>'
                                '<strong>n_train</strong> (<em>int</em>)</p></dd></dl>',
                                "plain-text subscript n_train outside math"),
    "overflowing-formula-block": (
        '<div class="sgdnoise-formula highlight-text notranslate"><div class="highlight">'
        '<pre style="white-space: pre">' + " + ".join(f"x_{i}" for i in range(60))
        + "</pre></div></div>", "formula block"),
    "formula-block": ('<div class="sgdnoise-formula highlight-text notranslate"><div '
                      'class="highlight"><pre>θ ← θ − η (g_B + √s · ξ),   ξ ~ N(0, Σ_kind)'
                      '</pre></div></div>', ""),
    "subscript-in-code": ("<p>the mini-batch gradient <code>g_B</code> is unbiased, and "
                          "<code>λ_max</code> sets the step</p>", ""),
    "shrunk-figure": ('<div class="cell_output"><figure><img src="{image}" style="width:240px">'
                      '<figcaption><span class="caption-number">Fig. 1 </span>planted'
                      '</figcaption></figure></div>', "renders"),
    "uncaptioned-figure": ('<div class="cell_output"><img src="{image}"></div>',
                           "no numbered caption"),
    "figure-text-below-11px": ('<div class="cell_output"><figure><img src="{image}" '
                               'style="width:480px"><figcaption><span class="caption-number">'
                               'Fig. 1 </span>planted</figcaption></figure></div>', "renders"),
    "wide-table": ('<div class="pst-scrollable-table-container"><table class="table"><tr>'
                   + "".join(f"<th>the_column_header_number_{i}</th>" for i in range(12))
                   + "</tr></table></div>", "sideways scroll"),
    "nan-in-table": ("<table><tr><th>steps to target</th></tr><tr><td>nan [nan, nan]</td></tr>"
                     "</table>", "raw value"),
    "inf-in-table": ("<table><tr><th>ratio</th></tr><tr><td>inf</td></tr></table>",
                     "raw value"),
    "bool-in-table": ("<table><tr><th>reached</th></tr><tr><td>True</td></tr></table>",
                      "raw value"),
    "negative-zero-in-table": ("<table><tr><th>gap</th></tr><tr><td>−0.00 ± 0.01</td></tr>"
                               "</table>", "raw value"),
    "good-table": ("<table><tr><th>steps to target</th><th>gap</th></tr><tr><td>220 "
                   "(192–253)</td><td>-0.01 ± 0.02</td></tr><tr><td>infinite: not reached"
                   "</td><td>0.00</td></tr></table>", ""),
    "good-figure": ('<div class="cell_output"><figure><img src="{image}"><figcaption>'
                    '<span class="caption-number">Fig. 1 </span>planted</figcaption></figure>'
                    '</div>', ""),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_publication_checks_fail_on_a_planted_defect(chromium, server, smoke_book, tmp_path,
                                                     plant):
    """Each check fails on a page with one planted defect (and only for that defect)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sgdnoise.plotting import use_style

    use_style()  # a figure made as the chapters make theirs: fits the column at 9 pt
    fig, ax = plt.subplots()
    ax.plot([1, 2, 4, 8], [1.0, 0.5, 0.25, 0.125], marker="o", label="measured")
    ax.set(xlabel="batch size B", ylabel="variance", title="a planted figure")
    ax.legend()
    image = smoke_book.html / "_images" / f"planted-{plant}.png"
    fig.savefig(image)
    plt.close(fig)
    snippet, expected = PLANTS[plant]
    snippet = snippet.replace("{image}", f"_images/{image.name}")
    page = smoke_book.html / f"planted-{plant}.html"
    text = (smoke_book.html / "intro.html").read_text()
    m = re.search(r"<article[^>]*>", text)
    assert m
    page.write_text(text[:m.end()] + snippet + text[m.end():])
    try:
        rendered = render(chromium, f"{server.base}/{page.name}", f"planted-{plant}", tmp_path)
        problems = layout_problems(rendered.measure(), smoke_book.html)
    finally:
        page.unlink()
        image.unlink()
    if not expected:  # the controls: a figure in the book's style, code, a formula block pass
        assert not problems, problems
        return
    assert problems, f"the planted {plant} was not detected"
    assert all(expected in p for p in problems), problems
