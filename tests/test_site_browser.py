"""The docs site as a reader sees it: built with mkdocs, served on 127.0.0.1, every page opened in headless Chromium.

A page fails on raw TeX left in its visible text (KaTeX did not run), on a KaTeX error, on an error in the
browser's console, on a request that leaves 127.0.0.1 (a CDN script, style or font: the site must work with no
network), on a request that fails (a missing figure, font or script), on an image that does not decode, and on a
link to a page or an anchor of the site that does not exist. A notebook page must show its cells. Chromium
(Debian's ``chromium``; .ci/run installs it) is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``): one browser for all pages, no driver, no websocket client, no extra Python
package. Without Chromium the browser tests skip, unless ``SBD_REQUIRE_BROWSER=1`` (CI) makes that a failure.
"""

import fcntl
import functools
import http.server
import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).parents[1]
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]
# \( \) \[ \] $$, a TeX command, or $...$ (notebook markdown) left as text outside code and rendered math.
RAW_TEX = re.compile(r"\\[()\[\]]|\$\$|\\[a-zA-Z]{2,}|\$[^\s$][^$\n]{0,200}?\$")

# Runs in the page once it has loaded: waits for KaTeX, the fonts and every image, then reports.
PAGE_REPORT = """(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  for (let i = 0, n = -1; i < 50; i++) {  // until the count of rendered formulas settles
    const k = document.querySelectorAll(".katex").length;
    if (k === n && i >= 3) break;
    n = k;
    await sleep(100);
  }
  await document.fonts.ready;
  const images = [...document.images];
  await Promise.all(images.map((img) => { img.loading = "eager"; return img.decode().catch(() => null); }));
  const skip = "pre, code, script, style, textarea, .katex";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);  // page, navigation, contents
  const text = [];
  for (let node; (node = walker.nextNode()); ) {
    const el = node.parentElement;  // the visible text only
    if (!el.closest(skip) && el.checkVisibility()) text.push(node.data);
  }
  const arithmatex = [...document.querySelectorAll(".arithmatex")];
  return {
    text: text.join(" "),
    katex: document.querySelectorAll(".katex").length,
    katex_errors: [...document.querySelectorAll(".katex-error")].map((e) => e.title || e.textContent),
    katex_in_code: document.querySelectorAll("pre .katex, code .katex, .clipboard-copy-txt .katex").length,
    arithmatex: arithmatex.length,
    unrendered: arithmatex.filter((e) => !e.querySelector(".katex")).map((e) => e.textContent.slice(0, 80)),
    scripts: [...document.scripts].map((s) => s.src).filter(Boolean),
    images: images.map((i) => ({ src: i.currentSrc.slice(0, 100), ok: i.complete && i.naturalWidth > 0 })),
    font_errors: [...document.fonts].filter((f) => f.status === "error").map((f) => f.family),
    notebook_cells: document.querySelectorAll(".jp-Cell").length,
    links: [...document.querySelectorAll("a[href]")].map((a) => a.href),
  };
})()"""


class Chromium:
    """Headless Chromium on the DevTools protocol over a pipe: the child reads commands on fd 3 and writes
    replies and events on fd 4, each a JSON message ended by a NUL byte."""

    def __init__(self, binary: str, profile: Path):
        cmd_r, self._w = os.pipe()
        self._r, out_w = os.pipe()
        # the child's ends above fd 10, so that dup2 onto 3 and 4 cannot overwrite one with the other
        a, b = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, out_w))
        os.close(cmd_r)
        os.close(out_w)
        self.log = profile / "chromium.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                preexec_fn=lambda: (os.dup2(a, 3), os.dup2(b, 4)),
                close_fds=False,  # keep 3 and 4 (dup2 clears close-on-exec); Python's own fds close on exec
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        os.close(a)
        os.close(b)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"no reply from chromium in {timeout} s (log: {self.log})")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (log: {self.log}): {self.log.read_text()[-2000:]}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params=None, session=None, timeout: float = 60) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = 60) -> None:
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self._read(timeout))

    def open(self, url: str) -> tuple[dict, dict, list[str]]:
        """Load ``url`` in a new tab: the page's report (PAGE_REPORT), its requests {url: status or error} and the
        errors its console showed."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=s)
        self.send("Page.navigate", {"url": url}, session=s)
        self.wait_for("Page.loadEventFired", s)
        args = {"expression": PAGE_REPORT, "awaitPromise": True, "returnByValue": True}
        report = self.send("Runtime.evaluate", args, session=s)["result"]["value"]
        urls, requests, console = {}, {}, []
        for e in (e for e in self.events if e.get("sessionId") == s):
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                console.append(p["exceptionDetails"].get("exception", {}).get("description", str(p)[:200]))
            elif e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])[:200])
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                console.append(f"{p['entry']['text']} {p['entry'].get('url', '')}"[:200])
            if e["method"] == "Network.requestWillBeSent":
                urls[p["requestId"]] = p["request"]["url"]
                requests.setdefault(p["request"]["url"], "sent")
            elif e["method"] == "Network.responseReceived":
                requests[p["response"]["url"]] = p["response"]["status"]
            elif e["method"] == "Network.loadingFailed" and not p.get("canceled"):
                requests[urls.get(p["requestId"], p["requestId"])] = p["errorText"]
        self.send("Target.closeTarget", {"targetId": target})
        self.events = [e for e in self.events if e.get("sessionId") != s]
        return report, requests, console

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


def _executed_notebooks(shared: Path, tmp: Path) -> tuple[Path, str]:
    """A folder of executed notebooks and the one to open: notebook 01 (LaTeX outputs, figures, the slider's
    figure) when tests/test_notebooks.py executed it earlier in this session, else notebook 05 executed here."""
    if (shared / "01_one_dimensional_example.ipynb").is_file():
        return shared, "01_one_dimensional_example"
    pm = pytest.importorskip("papermill")
    name = "05_breaking_time"
    (tmp / "executed").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SBD_FIGURES_DIR", str(tmp / "figures"))
        nb = f"{name}.ipynb"
        pm.execute_notebook(str(ROOT / "notebooks" / nb), str(tmp / "executed" / nb), cwd=str(tmp), progress_bar=False)
    return tmp / "executed", name


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built (strict) with executed notebooks, served on 127.0.0.1: (folder, base URL, notebook page)."""
    for mod in ("mkdocs", "material", "mkdocs_jupyter", "mkdocstrings_handlers.python"):
        pytest.importorskip(mod)
    tmp = tmp_path_factory.mktemp("site")
    executed, notebook = _executed_notebooks(tmp_path_factory.getbasetemp() / "executed-notebooks", tmp)
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", SBD_EXECUTED_NOTEBOOKS=str(executed))
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp / "site")]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    handler = functools.partial(QuietHandler, directory=str(tmp / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp / "site", f"http://127.0.0.1:{server.server_port}/", f"notebooks/{notebook}/"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        if os.environ.get("SBD_REQUIRE_BROWSER") == "1":
            pytest.fail("SBD_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    b = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


REMOTE_ASSET = re.compile(r"<(?:link|img)\b[^>]*\s(?:src|href)=\"(?:https?:)?//[^\"]*\"", re.I)
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S | re.I)


def _remote_scripts(html: str) -> list[str]:
    """Scripts from another host, with an empty src (the page loads itself as a script), or that load code
    from an address written in their text (nbconvert's mermaid loader imports from a CDN)."""
    bad = re.compile(r"\ssrc=\"(?:(?:https?:)?//[^\"]*)?\"", re.I)
    return [m[0][:120] for m in SCRIPT.finditer(html) if bad.search(m[1]) or re.search(r"https?://", m[2])]


def test_site_builds_strict_and_self_contained(site):
    """``mkdocs build --strict`` passes (no broken snippet, link, anchor or docstring); every notebook has a
    page; KaTeX is in the site; no page of it loads a script, style or image from another host."""
    folder, _, _ = site
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (folder / "notebooks" / nb.stem / "index.html").is_file(), nb.stem
    assert (folder / "assets" / "katex" / "katex.min.js").is_file()
    pages = {page: page.read_text() for page in folder.rglob("*.html")}
    remote = {m[0] for html in pages.values() for m in REMOTE_ASSET.finditer(html)}
    remote |= {s for html in pages.values() for s in _remote_scripts(html)}
    assert not remote, remote


def _problems(report: dict, requests: dict, console: list[str], origin: str) -> list[str]:
    """Everything wrong on one page, as messages (empty: the page is fine)."""
    text = report["text"]
    out = [f"raw TeX: ...{text[max(0, m.start() - 40) : m.end() + 40]!r}..." for m in RAW_TEX.finditer(text)]
    out += [f"KaTeX error: {e}" for e in report["katex_errors"]]
    out += [f"{report['katex_in_code']} formulas rendered inside code"] if report["katex_in_code"] else []
    out += [f"formula not rendered: {t!r}" for t in report["unrendered"]]
    out += [f"script not from the site: {s}" for s in report["scripts"] if not s.startswith(origin)]
    out += [f"image did not load: {i['src']}" for i in report["images"] if not i["ok"]]
    out += [f"font did not load: {f}" for f in report["font_errors"]]
    out += [f"console: {c}" for c in console]
    for url, status in requests.items():
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname != "127.0.0.1":
            out.append(f"request leaves 127.0.0.1: {url}")
        elif status != "sent" and (isinstance(status, str) or status >= 400):  # "sent": a worker's own request
            out.append(f"request failed ({status}): {url}")
    return out


ID = re.compile(r"""\sid=["']([^"']+)["']""")


@functools.cache
def _ids(path: Path) -> frozenset:
    return frozenset(ID.findall(path.read_text(errors="replace")))


def _broken_links(links: list[str], origin: str, folder: Path) -> list[str]:
    """Links into the site whose page (or file) or anchor does not exist in the built folder."""
    out = []
    for link in dict.fromkeys(links):
        parts = urlsplit(link)
        if not link.startswith(origin):
            continue  # another host: not loaded by the page, not checked here
        target = folder / parts.path.lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            out.append(f"broken link: {link}")
        elif parts.fragment and target.suffix == ".html" and parts.fragment not in _ids(target):
            out.append(f"broken anchor: {link}")
    return out


def _pages(folder: Path) -> list[str]:
    """Every page of the built site, as its path from the root ("" is the home page)."""
    rel = (p.parent.relative_to(folder) for p in folder.rglob("index.html"))
    return sorted("" if r == Path(".") else f"{r}/" for r in rel)


# page: at least so many rendered formulas and images: that KaTeX ran, and that the figures are there
AT_LEAST = {
    "derivations/": (100, 0),  # the most mathematics
    "conventions/": (20, 0),  # formulas in headings, so in the table of contents too
    "late_start/": (5, 4),  # a results page: figures and formulas
    "notebooks/": (5, 20),  # every committed figure
}


@pytest.mark.browser
def test_every_page_renders_offline(site, browser):
    """Every page of the site, one after the other in one browser: nothing wrong on any of them (_problems, broken
    links), every notebook page shows its cells, and the executed notebook its outputs."""
    folder, base, notebook = site
    origin = base.rstrip("/")
    pages = _pages(folder)
    assert len(pages) >= 40 and {"", "breaking_time/", "late_start/", notebook} <= set(pages), pages
    failures, reports = {}, {}
    for page in pages:
        report, requests, console = browser.open(base + page)
        problems = _problems(report, requests, console, origin) + _broken_links(report["links"], origin, folder)
        if page.startswith("notebooks/") and page != "notebooks/" and report["notebook_cells"] == 0:
            problems.append("no notebook cell on the page")
        if report["arithmatex"] and report["unrendered"]:
            problems.append(f"{len(report['unrendered'])} formulas not rendered")
        if problems:
            failures[page] = problems[:10]
        reports[page] = report
    assert not failures, "\n".join(f"{page}: {p}" for page, problems in failures.items() for p in problems)
    for page, (n_formulas, n_images) in AT_LEAST.items():
        assert reports[page]["katex"] >= n_formulas and len(reports[page]["images"]) >= n_images, page
    assert reports[notebook]["katex"] >= 2 and reports[notebook]["images"], "the executed notebook: outputs shown"
