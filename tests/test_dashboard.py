"""
The admin dashboard in a real browser: headless Chromium loads the page of
a running proxy (real sockets on 127.0.0.1) that has served requests, has a
server down and a denial to show; the page renders its charts and tables
and logs nothing to the console. Skipped where no Chromium is installed.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any, Generator, Optional

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue

from tests.helpers import RawClient, Response, reverse_config
from tests.test_integration_reverse import ReverseCase, request
from twisted_proxy.stats import RECENT

Gen = Generator[Deferred, Any, Any]


def chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def element(dom: str, ident: str) -> str:
    """
    The markup inside the element with id C{ident} (up to the next
    element of the page's own ids: enough for the checks below).
    """
    match = re.search(r'id="%s"[^>]*>(.*?)(?=<(?:section|/section))' % re.escape(ident), dom, re.S)
    return match.group(1) if match else ""


class DashboardTests(ReverseCase):
    timeout = 60

    def setUp(self) -> None:
        self.browser = chromium()
        if self.browser is None:
            raise self.skipTest("no Chromium installed")
        ReverseCase.setUp(self)
        RECENT.clear()
        self.addCleanup(RECENT.clear)

    @inlineCallbacks
    def test_page_renders(self) -> Gen:
        """
        The page shows the request rate chart, the listener, the route, a
        server that is down (with why), a denial, and no console error.
        """
        [origin] = self.origins("o")
        config = reverse_config(
            [{"path": "/", "backend": "pool"}],
            {"pool": {"servers": [{"url": f"http://127.0.0.1:{origin.port}"}, {"url": "http://127.0.0.1:9"}]}},
        )
        config["admin"] = {"endpoint": "tcp:0:interface=127.0.0.1"}
        proxy = self.h.start(config)
        port = proxy.ports["edge"]
        admin = proxy.ports["admin"]
        history = proxy.service.history
        history.sample()
        client: RawClient = yield self.h.client(port)
        for _ in range(20):
            client.send(request(b"/who"))
            response: Response = yield client.response()
            self.assertEqual(response.status, 200)
        client.send(b"GET nothing HTTP/1.1\r\nHost: site.test\r\n\r\n")
        yield client.closed()
        backend = proxy.service.backends["pool"]
        backend.set_up(backend.servers[1], False, "status 503 from the probe")
        history.clock = _Later(history.clock, 5.0)
        history.sample()
        out, err, code = yield getProcessOutputAndValue(
            self.browser,
            [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=5000",
                "--dump-dom",
                f"http://127.0.0.1:{admin}/",
            ],
            env=dict(os.environ),
        )
        dom = out.decode("utf-8", "replace")
        self.assertEqual(code, 0, err[-2000:])
        console = [line for line in err.decode("utf-8", "replace").splitlines() if ":CONSOLE" in line]
        self.assertEqual(console, [])
        self.assertIn("<path", element(dom, "c-rps"))
        self.assertIn("edge", element(dom, "listeners"))
        self.assertIn("*/", element(dom, "routes"))
        backends = element(dom, "backends")
        self.assertIn('class="l down"', backends)
        self.assertIn("status 503 from the probe", backends)
        self.assertIn("<rect", element(dom, "timeline"))
        self.assertIn("400", element(dom, "recent"))
        self.assertIn("configuration generation 1", dom)


class _Later:
    """
    A clock C{offset} seconds ahead of C{clock} (the history's second
    sample, as if five seconds later).
    """

    def __init__(self, clock: Any, offset: float) -> None:
        self.clock = clock
        self.offset = offset

    def seconds(self) -> float:
        return float(self.clock.seconds()) + self.offset
