"""Screenshot of a page of the built site, taken by headless Chromium.

    python docs/screenshot.py model.html docs/figures/site-model-page.png [--scroll-to ID]

Serves docs/_build/html (build it first: docs/site.md) on 127.0.0.1, opens the
page in Debian's Chromium through Selenium, waits for MathJax (on a page with math), optionally
scrolls to the element with the given id, and saves a 1400 x 1000 PNG.
"""
import argparse
import functools
import http.server
import tempfile
import threading
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

SITE = Path(__file__).resolve().parent / "_build" / "html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", help="path of the page inside the site, e.g. model.html")
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--scroll-to", help="id of an element to scroll to")
    parser.add_argument("--site", type=Path, default=SITE, help=f"built site (default {SITE})")
    args = parser.parse_args(argv)

    handler = functools.partial(_QuietHandler, directory=str(args.site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--hide-scrollbars", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.set_script_timeout(60)
            driver.get(f"http://127.0.0.1:{server.server_port}/{args.page}")
            driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "if (!window.MathJax) { done(false); return; }"  # a page without math
                "MathJax.startup.promise.then(() => done(true));")
            if args.scroll_to:
                driver.execute_script("document.getElementById(arguments[0]).scrollIntoView();",
                                      args.scroll_to)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
            server.shutdown()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
