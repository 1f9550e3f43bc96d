"""
Tests for L{twisted_proxy.config}: TOML to frozen objects, every mistake
reported as one C{"FILE: key.path: message"} line.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import shutil
import tempfile
from typing import Any, List

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.config import ConfigError, default_config, load_config, parse_config
from twisted_proxy.config.endpoints import endpoint_problem, split_endpoint
from twisted_proxy.filters.registry import builtin_type_names
from twisted_proxy.model import (
    DEFAULT_ALLOW_CLIENTS,
    AdminConfig,
    BackendConfig,
    Config,
    HealthConfig,
    ListenerConfig,
    ParentProxy,
    ProxySettings,
    RouteConfig,
    ServerConfig,
)

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc")

LISTENER = """
[[listener]]
name = "out"
kind = "forward"
endpoint = "tcp:3128:interface=127.0.0.1"
"""


def echo_factory(listener_config: Any, reactor: Any) -> Any:
    """
    A stand-in custom listener factory, loaded by dotted path.
    """
    return None


class CustomFilter:
    """
    A stand-in custom filter, loaded by dotted path.
    """


NOT_CALLABLE = 42


class CustomBalancer:
    """
    A stand-in custom balancer, loaded by dotted path.
    """


REVERSE = """
[[listener]]
name = "edge"
kind = "reverse"
endpoint = "tcp:8080:interface=127.0.0.1"
"""

ROUTE = """
  [[listener.route]]
  backend = "web"
"""

WEB = """
[backend.web]
servers = [{ url = "http://127.0.0.1:5003" }]
"""

TCP = """
[[listener]]
name = "db"
kind = "tcp"
endpoint = "tcp:7000:interface=127.0.0.1"
"""

DB = """
[backend.db]
servers = [{ url = "tcp://127.0.0.1:5432" }]
"""


class ConfigTestMixin:
    """
    Helpers to parse TOML text as the file C{p.toml} in a temporary folder.
    """

    def base_dir(self) -> str:
        """
        A new empty folder, removed after the test (not under the working
        directory, which pytest does not change).
        """
        d = tempfile.mkdtemp(prefix="twisted-proxy-test-")
        self.addCleanup(shutil.rmtree, d, True)  # type: ignore[attr-defined]
        return d

    def parse(self, text: str) -> Config:
        return parse_config(text, "p.toml", self.base_dir())

    def errors(self, text: str) -> List[str]:
        """
        The error lines C{text} produces (failing if it is valid).
        """
        try:
            parse_config(text, "p.toml", self.base_dir())
        except ConfigError as e:
            return e.lines()
        raise AssertionError("the configuration was accepted")


class DefaultConfigTests(SynchronousTestCase):
    def test_default_listener(self) -> None:
        """
        The embedded default is one forward listener named C{default} on
        127.0.0.1:3128, serving loopback clients only.
        """
        config = default_config()
        self.assertEqual(len(config.listeners), 1)
        listener = config.listeners[0]
        self.assertEqual(listener.name, "default")
        self.assertEqual(listener.kind, "forward")
        self.assertEqual(listener.endpoint, "tcp:3128:interface=127.0.0.1")
        self.assertEqual(
            listener.allow_clients,
            (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        )

    def test_default_settings(self) -> None:
        """
        The default logs accesses to stdout, has no admin listener and no
        filters.
        """
        config = default_config()
        self.assertEqual(config.proxy, ProxySettings())
        self.assertEqual(config.proxy.access_log, "-")
        self.assertIsNone(config.admin)
        self.assertEqual(dict(config.filters), {})


class ValidConfigTests(ConfigTestMixin, SynchronousTestCase):
    def test_minimal(self) -> None:
        """
        A single forward listener is a whole configuration; all else takes
        its default, and C{allow_clients} defaults to loopback and private
        ranges.
        """
        config = self.parse(LISTENER)
        self.assertEqual(config.path, "p.toml")
        self.assertEqual(config.proxy, ProxySettings())
        self.assertIsNone(config.admin)
        [listener] = config.listeners
        self.assertEqual(listener.name, "out")
        self.assertEqual(listener.kind, "forward")
        self.assertEqual(
            listener.allow_clients,
            tuple(ipaddress.ip_network(c) for c in DEFAULT_ALLOW_CLIENTS),
        )
        self.assertEqual(listener.anonymity, "anonymous")
        self.assertEqual(listener.connect_ports, (443,))

    def test_dict_input(self) -> None:
        """
        An already parsed mapping is validated like TOML text.
        """
        config = parse_config(
            {"listener": [{"name": "a", "kind": "forward", "endpoint": "tcp:0"}]},
            "p.toml",
            self.base_dir(),
        )
        self.assertEqual(config.listeners[0].name, "a")

    def test_proxy_settings(self) -> None:
        """
        C{[proxy]} timeouts accept integers and floats (stored as floats);
        sizes are integers.
        """
        config = self.parse(
            """
            [proxy]
            access_log = "off"
            connect_timeout = 2
            idle_timeout = 0.5
            header_timeout = 3
            first_byte_timeout = 4
            filter_timeout = 2.5
            tunnel_idle_timeout = 5
            max_head_size = 1024
            pool_max_idle = 0
            pool_max_idle_total = 100
            pool_idle_timeout = 7.5
            """
            + LISTENER
        )
        self.assertEqual(
            config.proxy,
            ProxySettings(
                access_log="off",
                connect_timeout=2.0,
                idle_timeout=0.5,
                header_timeout=3.0,
                first_byte_timeout=4.0,
                filter_timeout=2.5,
                tunnel_idle_timeout=5.0,
                max_head_size=1024,
                pool_max_idle=0,
                pool_max_idle_total=100,
                pool_idle_timeout=7.5,
            ),
        )
        self.assertIsInstance(config.proxy.connect_timeout, float)

    def test_access_log_relative(self) -> None:
        """
        A relative access log path is resolved against the configuration
        file's folder.
        """
        base = self.base_dir()
        os.makedirs(os.path.join(base, "logs"))
        config = parse_config(
            '[proxy]\naccess_log = "logs/access.log"\n' + LISTENER, "p.toml", base
        )
        self.assertEqual(config.proxy.access_log, os.path.join(base, "logs", "access.log"))

    def test_admin(self) -> None:
        """
        An C{[admin]} table turns the admin listener on at its endpoint.
        """
        config = self.parse(
            '[admin]\nendpoint = "tcp:9901:interface=127.0.0.1"\n' + LISTENER
        )
        self.assertEqual(config.admin, AdminConfig(endpoint="tcp:9901:interface=127.0.0.1"))

    def test_forward_keys(self) -> None:
        """
        A forward listener's clients, anonymity, CONNECT ports and parent
        proxies are parsed; a parent URL without port means port 80.
        """
        config = self.parse(
            LISTENER
            + """
            allow_clients = ["10.1.2.3/8", "::1"]
            anonymity = "elite"
            connect_ports = [443, 8443]
            parents = [
              { domains = ["*.Example.jp", "example.org"], proxy = "http://127.0.0.1:3129" },
              { domains = ["example.net"], proxy = "http://127.0.0.1" },
            ]
            """
        )
        [listener] = config.listeners
        self.assertEqual(
            listener.allow_clients,
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")),
        )
        self.assertEqual(listener.anonymity, "elite")
        self.assertEqual(listener.connect_ports, (443, 8443))
        self.assertEqual(
            listener.parents,
            (
                ParentProxy(domains=("*.example.jp", "example.org"), host="127.0.0.1", port=3129),
                ParentProxy(domains=("example.net",), host="127.0.0.1", port=80),
            ),
        )

    def test_custom_listener(self) -> None:
        """
        A custom listener names its factory by dotted path; its other keys,
        whatever they are, are kept for the factory.
        """
        config = self.parse(
            """
            [[listener]]
            name = "echo"
            kind = "custom"
            endpoint = "tcp:7007:interface=127.0.0.1"
            factory = "tests.test_config:echo_factory"
            greeting = "hello"
            anything = { goes = 1 }
            """
        )
        [listener] = config.listeners
        self.assertEqual(listener.kind, "custom")
        self.assertEqual(listener.factory, "tests.test_config:echo_factory")
        self.assertEqual(dict(listener.options), {"greeting": "hello", "anything": {"goes": 1}})

    def test_acl_filter(self) -> None:
        """
        A built-in filter table is parsed by its type's module and can be
        named by a listener.
        """
        config = self.parse(
            LISTENER
            + """
            filters = ["office-hours"]

            [filter.office-hours]
            type = "acl"
            block_domains = ["facebook.com", "twitter.com"]
            during = "09:00-18:00"
            timezone = "Europe/Berlin"
            """
        )
        self.assertEqual(config.listeners[0].filters, ("office-hours",))
        self.assertEqual(config.filters["office-hours"].name, "office-hours")
        self.assertEqual(config.filters["office-hours"].type, "acl")

    def test_custom_filter(self) -> None:
        """
        A filter whose type is a dotted path keeps its table (less C{type})
        unvalidated, for the custom code.
        """
        config = self.parse(
            LISTENER
            + """
            filters = ["mine"]

            [filter.mine]
            type = "tests.test_config:CustomFilter"
            whatever = [1, 2]
            """
        )
        f = config.filters["mine"]
        self.assertEqual(f.type, "tests.test_config:CustomFilter")
        self.assertEqual(f.spec, {"whatever": [1, 2]})

    def test_endpoints(self) -> None:
        """
        TCP, IPv6, UNIX and systemd endpoint strings are accepted without
        anything being bound (systemd descriptors need not exist).
        """
        for endpoint in (
            "tcp:0",
            "tcp6:3128:interface=\\:\\:1",
            "unix:/tmp/proxy.sock",
            "systemd:domain=INET:index=0",
        ):
            config = self.parse(
                f"""
                [[listener]]
                name = "x"
                kind = "forward"
                endpoint = '{endpoint}'
                """
            )
            self.assertEqual(config.listeners[0].endpoint, endpoint)


class ErrorTests(ConfigTestMixin, SynchronousTestCase):
    def test_toml_syntax(self) -> None:
        """
        A TOML syntax error is one C{FILE: toml: ...} line.
        """
        [line] = self.errors("[proxy\n")
        self.assertTrue(line.startswith("p.toml: toml: "), line)

    def test_unreadable_file(self) -> None:
        """
        A missing file is one C{FILE: file: reason} line.
        """
        path = os.path.join(self.base_dir(), "missing.toml")
        with self.assertRaises(ConfigError) as cm:
            load_config(path)
        self.assertEqual(cm.exception.lines(), [f"{path}: file: No such file or directory"])

    def test_not_utf8(self) -> None:
        """
        A file that is not UTF-8 is one C{FILE: file: ...} line.
        """
        path = os.path.join(self.base_dir(), "bad.toml")
        with open(path, "wb") as f:
            f.write(b'name = "\xff"\n')
        with self.assertRaises(ConfigError) as cm:
            load_config(path)
        [line] = cm.exception.lines()
        self.assertTrue(line.startswith(f"{path}: file: not UTF-8"), line)

    def test_load_config_file(self) -> None:
        """
        L{load_config} reads a file and names it in the L{Config}.
        """
        path = os.path.join(self.base_dir(), "ok.toml")
        with open(path, "w") as f:
            f.write(LISTENER)
        self.assertEqual(load_config(path).path, path)

    def test_unknown_keys(self) -> None:
        """
        Unknown keys are errors at every level: top, C{[proxy]}, C{[admin]},
        a forward listener and a parent entry.
        """
        lines = self.errors(
            """
            bogus = 1
            [proxy]
            conect_timeout = 5
            [admin]
            endpoint = "tcp:0"
            port = 1
            """
            + LISTENER
            + """
            colour = "red"
            parents = [{ domains = ["a.com"], proxy = "http://127.0.0.1:1", user = "x" }]
            """
        )
        self.assertEqual(
            lines,
            [
                "p.toml: bogus: unknown key",
                "p.toml: proxy.conect_timeout: unknown key",
                "p.toml: admin.port: unknown key",
                "p.toml: listener[0].colour: unknown key",
                "p.toml: listener[0].parents[0].user: unknown key",
            ],
        )

    def test_timeouts(self) -> None:
        """
        Timeouts must be positive finite numbers; booleans and strings are
        refused.
        """
        lines = self.errors(
            """
            [proxy]
            connect_timeout = 0
            idle_timeout = -1.5
            header_timeout = true
            first_byte_timeout = "30"
            tunnel_idle_timeout = inf
            """
            + LISTENER
        )
        self.assertEqual(
            lines,
            [
                "p.toml: proxy.connect_timeout: must be a number of seconds > 0, not 0",
                "p.toml: proxy.idle_timeout: must be a number of seconds > 0, not -1.5",
                "p.toml: proxy.header_timeout: must be a number of seconds, not a boolean",
                "p.toml: proxy.first_byte_timeout: must be a number of seconds, not a string",
                "p.toml: proxy.tunnel_idle_timeout: must be a number of seconds > 0, not inf",
            ],
        )

    def test_sizes(self) -> None:
        """
        C{max_head_size} is an integer of at least 1024, C{pool_max_idle}
        an integer of at least 0, C{pool_max_idle_total} of at least 1;
        floats and booleans are not integers.
        """
        lines = self.errors(
            "[proxy]\nmax_head_size = 1000\npool_max_idle = -1\npool_max_idle_total = 0\n" + LISTENER
        )
        self.assertEqual(
            lines,
            [
                "p.toml: proxy.max_head_size: must be an integer >= 1024, not 1000",
                "p.toml: proxy.pool_max_idle: must be an integer >= 0, not -1",
                "p.toml: proxy.pool_max_idle_total: must be an integer >= 1, not 0",
            ],
        )
        lines = self.errors("[proxy]\nmax_head_size = 2048.0\npool_max_idle = true\n" + LISTENER)
        self.assertEqual(
            lines,
            [
                "p.toml: proxy.max_head_size: must be an integer, not a float",
                "p.toml: proxy.pool_max_idle: must be an integer, not a boolean",
            ],
        )

    def test_head_limits(self) -> None:
        """
        C{max_head_size} (default 32768), C{max_field_size} (default 8192,
        at least 256) and C{max_header_count} (default 100, at least 16)
        are integers; each problem names its key.
        """
        defaults = self.parse(LISTENER).proxy
        self.assertEqual(
            (defaults.max_head_size, defaults.max_field_size, defaults.max_header_count),
            (32768, 8192, 100),
        )
        proxy = self.parse(
            "[proxy]\nmax_head_size = 16384\nmax_field_size = 256\nmax_header_count = 16\n"
            + LISTENER
        ).proxy
        self.assertEqual(
            (proxy.max_head_size, proxy.max_field_size, proxy.max_header_count),
            (16384, 256, 16),
        )
        lines = self.errors(
            "[proxy]\nmax_field_size = 255\nmax_header_count = 15\n" + LISTENER
        )
        self.assertEqual(
            lines,
            [
                "p.toml: proxy.max_field_size: must be an integer >= 256, not 255",
                "p.toml: proxy.max_header_count: must be an integer >= 16, not 15",
            ],
        )
        lines = self.errors(
            '[proxy]\nmax_field_size = "8KiB"\nmax_header_count = 100.0\n' + LISTENER
        )
        self.assertEqual(
            lines,
            [
                "p.toml: proxy.max_field_size: must be an integer, not a string",
                "p.toml: proxy.max_header_count: must be an integer, not a float",
            ],
        )

    def test_access_log(self) -> None:
        """
        An access log file's folder must exist; a folder is not a file.
        """
        base = self.base_dir()
        with self.assertRaises(ConfigError) as cm:
            parse_config('[proxy]\naccess_log = "nope/a.log"\n' + LISTENER, "p.toml", base)
        self.assertEqual(
            cm.exception.lines(),
            [
                f"p.toml: proxy.access_log: directory {os.path.join(base, 'nope')!r}"
                " does not exist"
            ],
        )
        with self.assertRaises(ConfigError) as cm:
            parse_config('[proxy]\naccess_log = "."\n' + LISTENER, "p.toml", base)
        self.assertEqual(
            cm.exception.lines(),
            ["p.toml: proxy.access_log: '.' is a directory (use a file path, '-' or 'off')"],
        )

    def test_tables_wrong_type(self) -> None:
        """
        C{proxy}, C{admin} and C{filter} must be tables, C{listener} an array
        of tables.
        """
        lines = self.errors('proxy = 1\nadmin = "x"\nfilter = []\nlistener = {}\n')
        self.assertEqual(
            lines,
            [
                "p.toml: proxy: must be a table, not an integer",
                "p.toml: admin: must be a table, not a string",
                "p.toml: filter: must be a table, not an array",
                "p.toml: listener: must be an array of tables ([[listener]]), not a table",
            ],
        )

    def test_no_listener(self) -> None:
        """
        A configuration without any listener is refused.
        """
        self.assertEqual(
            self.errors("[proxy]\n"),
            ["p.toml: listener: at least one [[listener]] is required"],
        )

    def test_admin_endpoint(self) -> None:
        """
        C{[admin]} needs a valid endpoint.
        """
        self.assertEqual(
            self.errors("[admin]\n" + LISTENER),
            ["p.toml: admin.endpoint: required key is missing"],
        )
        [line] = self.errors('[admin]\nendpoint = "tcp:nine"\n' + LISTENER)
        self.assertTrue(
            line.startswith("p.toml: admin.endpoint: invalid endpoint 'tcp:nine': "), line
        )

    def test_listener_required(self) -> None:
        """
        A listener needs a name, a kind and an endpoint.
        """
        self.assertEqual(
            self.errors("[[listener]]\n"),
            [
                "p.toml: listener[0].name: required key is missing",
                "p.toml: listener[0].kind: required key is missing",
                "p.toml: listener[0].endpoint: required key is missing",
            ],
        )

    def test_listener_types(self) -> None:
        """
        Listener name and kind must be strings; an endpoint must be a string.
        """
        self.assertEqual(
            self.errors("[[listener]]\nname = 1\nkind = true\nendpoint = 3128\n"),
            [
                "p.toml: listener[0].name: must be a string, not an integer",
                "p.toml: listener[0].kind: must be a string, not a boolean",
                "p.toml: listener[0].endpoint: must be a string (a Twisted endpoint such as"
                " 'tcp:3128:interface=127.0.0.1'), not an integer",
            ],
        )

    def test_duplicate_names(self) -> None:
        """
        Listener names are unique.
        """
        self.assertEqual(
            self.errors(LISTENER + LISTENER.replace("3128", "3129")),
            ["p.toml: listener[1].name: duplicate listener name 'out' (also listener[0])"],
        )

    def test_kind(self) -> None:
        """
        An unknown kind is refused; a reverse listener without routes and a
        tcp listener without backend are refused for that.
        """
        lines = self.errors(
            LISTENER.replace('"forward"', '"sideways"')
            + LISTENER.replace('"out"', '"r"').replace('"forward"', '"reverse"')
            + LISTENER.replace('"out"', '"t"').replace('"forward"', '"tcp"')
        )
        self.assertEqual(
            lines,
            [
                "p.toml: listener[0].kind: unknown kind 'sideways'"
                " (expected forward, reverse, tcp or custom)",
                "p.toml: listener[1].route: at least one [[listener.route]] is required",
                "p.toml: listener[2].backend: required key is missing",
            ],
        )

    def test_bad_endpoints(self) -> None:
        """
        Endpoint strings that Twisted cannot parse are reported with the
        reason, never a traceback: bad port, unknown type, empty, out of
        range, missing arguments, bad systemd options, missing TLS files.
        """
        cases = [
            "tcp:abc",
            "nosuch:1",
            "",
            "tcp:70000",
            "tcp",
            "tcp:1:bogus=2",
            "systemd:domain=INET",
            "systemd:domain=NOPE:index=0",
            "ssl:443:privateKey=/nonexistent/key.pem",
            "unix:",
        ]
        text = "".join(
            f"[[listener]]\nname = 'l{i}'\nkind = 'forward'\nendpoint = '{e}'\n"
            for i, e in enumerate(cases)
        )
        lines = self.errors(text)
        self.assertEqual(len(lines), len(cases), lines)
        for i, (line, endpoint) in enumerate(zip(lines, cases)):
            prefix = f"p.toml: listener[{i}].endpoint: "
            self.assertTrue(line.startswith(prefix), line)
            if endpoint:
                self.assertIn(f"invalid endpoint {endpoint!r}: ", line)
        self.assertEqual(lines[2], "p.toml: listener[2].endpoint: must not be empty")
        self.assertIn("port 70000 is out of range", lines[3])
        self.assertEqual(
            lines[0], "p.toml: listener[0].endpoint: invalid endpoint 'tcp:abc': port 'abc' is not a number"
        )
        self.assertEqual(
            lines[4], "p.toml: listener[4].endpoint: invalid endpoint 'tcp': no port (e.g. 'tcp:3128')"
        )

    def test_endpoint_trailing_backslash(self) -> None:
        """
        An endpoint string ending with a backslash (which escapes nothing)
        is reported as such.
        """
        self.assertEqual(
            self.errors(
                "[[listener]]\nname = 'l'\nkind = 'forward'\nendpoint = 'tcp:3128\\'\n"
            ),
            [
                "p.toml: listener[0].endpoint: invalid endpoint 'tcp:3128\\\\':"
                " it ends with a backslash, which escapes nothing"
            ],
        )

    def test_allow_clients(self) -> None:
        """
        C{allow_clients} is a list of CIDR strings; each bad entry is named
        by its index.
        """
        self.assertEqual(
            self.errors(LISTENER + 'allow_clients = ["10.0.0.0/8", "10.0.0.300/8", 5]\n'),
            [
                "p.toml: listener[0].allow_clients[1]: '10.0.0.300/8' is not an IP network (CIDR)",
                "p.toml: listener[0].allow_clients[2]: must be a string, not an integer",
            ],
        )
        self.assertEqual(
            self.errors(LISTENER + 'allow_clients = "10.0.0.0/8"\n'),
            ["p.toml: listener[0].allow_clients: must be an array of strings, not a string"],
        )

    def test_anonymity(self) -> None:
        """
        C{anonymity} is transparent, anonymous or elite.
        """
        self.assertEqual(
            self.errors(LISTENER + 'anonymity = "invisible"\n'),
            [
                "p.toml: listener[0].anonymity: unknown anonymity 'invisible'"
                " (expected transparent, anonymous or elite)"
            ],
        )

    def test_connect_ports(self) -> None:
        """
        C{connect_ports} are integers from 1 to 65535.
        """
        self.assertEqual(
            self.errors(LISTENER + 'connect_ports = [443, 0, 65536, "80", true]\n'),
            [
                "p.toml: listener[0].connect_ports[1]: port 0 is out of range 1-65535",
                "p.toml: listener[0].connect_ports[2]: port 65536 is out of range 1-65535",
                "p.toml: listener[0].connect_ports[3]: must be a port number, not a string",
                "p.toml: listener[0].connect_ports[4]: must be a port number, not a boolean",
            ],
        )
        self.assertEqual(
            self.errors(LISTENER + "connect_ports = 443\n"),
            ["p.toml: listener[0].connect_ports: must be an array of port numbers, not an integer"],
        )

    def test_unknown_filter(self) -> None:
        """
        A listener may only name filters defined as C{[filter.NAME]}.
        """
        self.assertEqual(
            self.errors(LISTENER + 'filters = ["x"]\n'),
            ["p.toml: listener[0].filters[0]: unknown filter 'x'"],
        )

    def test_parents(self) -> None:
        """
        Each parent needs domains and an C{http://host[:port]} proxy URL.
        """
        lines = self.errors(
            LISTENER
            + """
            parents = [
              { proxy = "http://127.0.0.1:3129" },
              { domains = ["a.com"], proxy = "https://127.0.0.1:3129" },
              { domains = ["a.com"], proxy = "http://127.0.0.1:99999" },
              { domains = ["a b.com", ""], proxy = "http://127.0.0.1:1/path" },
              { domains = [] },
              "http://127.0.0.1:1",
            ]
            """
        )
        self.assertEqual(
            lines,
            [
                "p.toml: listener[0].parents[0].domains: required key is missing",
                "p.toml: listener[0].parents[1].proxy: proxy URL 'https://127.0.0.1:3129'"
                " must use the http scheme ('http://host:port')",
                "p.toml: listener[0].parents[2].proxy: invalid proxy URL"
                " 'http://127.0.0.1:99999': Port out of range 0-65535",
                "p.toml: listener[0].parents[3].domains[0]: 'a b.com' is not a domain name",
                "p.toml: listener[0].parents[3].domains[1]: must not be empty",
                "p.toml: listener[0].parents[3].proxy: proxy URL 'http://127.0.0.1:1/path'"
                " must be 'http://host:port' only",
                "p.toml: listener[0].parents[4].domains: must not be empty",
                "p.toml: listener[0].parents[4].proxy: required key is missing",
                "p.toml: listener[0].parents[5]: must be a table, not a string",
            ],
        )

    def test_custom_listener_errors(self) -> None:
        """
        A custom listener needs a factory that can be imported and called.
        """
        head = "[[listener]]\nname = '{0}'\nkind = 'custom'\nendpoint = 'tcp:0'\n"
        lines = self.errors(
            head.format("a")
            + head.format("b")
            + "factory = 'no_such_module_xyz:F'\n"
            + head.format("c")
            + "factory = 'tests.test_config:NOT_CALLABLE'\n"
            + head.format("d")
            + "factory = 'tests.test_config:missing'\n"
        )
        self.assertEqual(
            lines,
            [
                "p.toml: listener[0].factory: required key is missing",
                "p.toml: listener[1].factory: cannot load factory: cannot import"
                " 'no_such_module_xyz': No module named 'no_such_module_xyz'",
                "p.toml: listener[2].factory: 'tests.test_config:NOT_CALLABLE' is not callable",
                "p.toml: listener[3].factory: cannot load factory: module"
                " 'tests.test_config' has no 'missing'",
            ],
        )

    def test_filter_type(self) -> None:
        """
        A filter needs a type: a built-in name or an importable dotted path.
        """
        lines = self.errors(
            LISTENER
            + """
            [filter.a]
            block_domains = []
            [filter.b]
            type = "nosuch"
            [filter.c]
            type = "no_such_module_xyz:F"
            [filter.d]
            type = 3
            [filter.e]
            """
        )
        self.assertEqual(
            lines,
            [
                "p.toml: filter.a.type: required key is missing",
                "p.toml: filter.b.type: unknown filter type 'nosuch' (built-in: "
                + ", ".join(builtin_type_names())
                + "; a custom filter is 'package.module:name')",
                "p.toml: filter.c.type: cannot load custom filter: cannot import"
                " 'no_such_module_xyz': No module named 'no_such_module_xyz'",
                "p.toml: filter.d.type: must be a string, not an integer",
                "p.toml: filter.e.type: required key is missing",
            ],
        )

    def test_filter_not_table(self) -> None:
        """
        Each C{filter.NAME} must be a table.
        """
        self.assertEqual(
            self.errors(LISTENER + "[filter]\nx = 1\n"),
            ["p.toml: filter.x: must be a table, not an integer"],
        )

    def test_acl_errors(self) -> None:
        """
        A built-in filter's own problems are reported under its table's
        path, and a listener naming that filter gets no extra error.
        """
        lines = self.errors(
            LISTENER
            + """
            filters = ["office-hours"]

            [filter.office-hours]
            type = "acl"
            during = "25:00-18:00"
            frequency = 3
            """
        )
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(
            any(line.startswith("p.toml: filter.office-hours.during: ") for line in lines),
            lines,
        )
        self.assertIn("p.toml: filter.office-hours.frequency: unknown key", lines)

    def test_all_errors_reported(self) -> None:
        """
        Problems in different tables are all reported, in file order, not
        only the first.
        """
        lines = self.errors(
            """
            [proxy]
            connect_timeout = -1
            [admin]
            endpoint = "bogus:1"

            [[listener]]
            name = "a"
            kind = "forward"
            endpoint = "tcp:x"
            anonymity = "nope"

            [[listener]]
            name = "a"
            kind = "forward"
            endpoint = "tcp:1"
            filters = ["missing"]
            """
        )
        keys = [line.split(": ")[1] for line in lines]
        self.assertEqual(
            keys,
            [
                "proxy.connect_timeout",
                "admin.endpoint",
                "listener[0].endpoint",
                "listener[0].anonymity",
                "listener[1].filters[0]",
                "listener[1].name",
            ],
        )

    def test_file_order_within_table(self) -> None:
        """
        Within one table, problems come in the order of the keys in the
        file, unknown keys included.
        """
        lines = self.errors("[proxy]\nidle_timeout = 0\nfoo = 1\nmax_head_size = 1\n" + LISTENER)
        self.assertEqual(
            [line.split(": ")[1] for line in lines],
            ["proxy.idle_timeout", "proxy.foo", "proxy.max_head_size"],
        )

    def test_error_message(self) -> None:
        """
        A L{ConfigError}'s text is its lines; a problem without key path is
        printed as C{FILE: message}.
        """
        e = ConfigError([("a.b", "bad"), ("", "whole file")], "f.toml")
        self.assertEqual(e.lines(), ["f.toml: a.b: bad", "f.toml: whole file"])
        self.assertEqual(str(e), "f.toml: a.b: bad\nf.toml: whole file")


FULL_REVERSE = """
[[listener]]
name = "edge"
kind = "reverse"
endpoint = "tcp:8080:interface=127.0.0.1"
allow_clients = ["0.0.0.0/0", "::/0"]
anonymity = "elite"
trusted_proxies = ["10.0.0.0/8"]
hide_headers = ["Server", "X-Powered-By", "X-AspNet-Version"]
forwarded = true
filters = ["office"]

  [[listener.route]]
  host = "API.Example.com."
  path = "/api/"
  backend = "api"
  filters = ["office"]
  strip_prefix = true

  [[listener.route]]
  host = "*.example.com"
  path = "/old/"
  backend = "api"
  rewrite_prefix = "/v2/"
  preserve_host = false

  [[listener.route]]
  backend = "web"

[[listener]]
name = "db"
kind = "tcp"
endpoint = "tcp:7000:interface=127.0.0.1"
backend = "db"
allow_clients = ["127.0.0.0/8"]
filters = ["office"]

[backend.api]
balance = "hash"
hash_key = "header:X-User"
servers = [
  { url = "http://127.0.0.1:5001", weight = 3, max_connections = 100 },
  { url = "https://Localhost" },
  { url = "http://[::1]:5002/", backup = true },
]
health = { path = "/health", interval = 0.5, timeout = 2, rise = 1, fall = 4, expect = [200, 204] }
retries = 0
max_fails = 0
fail_timeout = 30
queue_timeout = 1.5

[backend.web]
balance = "least_conn"
servers = [{ url = "http://127.0.0.1:5003" }]
health = { expect = 200, path = "/" }

[backend.db]
balance = "tests.test_config:CustomBalancer"
servers = [{ url = "tcp://127.0.0.1:5432" }, { url = "tcp://127.0.0.1:5433" }]
health = {}

[filter.office]
type = "acl"
block_domains = ["example.org"]
"""


class ReverseConfigTests(ConfigTestMixin, SynchronousTestCase):
    """
    Reverse and tcp listeners, their routes, and C{[backend.NAME]} tables.
    """

    def test_full(self) -> None:
        """
        Every key of a reverse listener, a route, a tcp listener and a
        backend is parsed into the model: route hosts normalized, server
        ports defaulted by scheme, seconds as floats, a single C{expect}
        status as a one-element tuple, C{header:} hash keys lower-cased.
        """
        config = self.parse(FULL_REVERSE)
        edge, db = config.listeners
        self.assertEqual(
            edge,
            ListenerConfig(
                name="edge",
                kind="reverse",
                endpoint="tcp:8080:interface=127.0.0.1",
                allow_clients=(
                    ipaddress.ip_network("0.0.0.0/0"),
                    ipaddress.ip_network("::/0"),
                ),
                anonymity="elite",
                trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),),
                hide_headers=("Server", "X-Powered-By", "X-AspNet-Version"),
                forwarded=True,
                filters=("office",),
                routes=(
                    RouteConfig(
                        host="api.example.com",
                        path="/api/",
                        backend="api",
                        filters=("office",),
                        strip_prefix=True,
                    ),
                    RouteConfig(
                        host="*.example.com",
                        path="/old/",
                        backend="api",
                        rewrite_prefix="/v2/",
                        preserve_host=False,
                    ),
                    RouteConfig(backend="web"),
                ),
            ),
        )
        self.assertEqual(
            db,
            ListenerConfig(
                name="db",
                kind="tcp",
                endpoint="tcp:7000:interface=127.0.0.1",
                backend="db",
                allow_clients=(ipaddress.ip_network("127.0.0.0/8"),),
                filters=("office",),
            ),
        )
        self.assertEqual(list(config.backends), ["api", "web", "db"])
        self.assertEqual(
            config.backends["api"],
            BackendConfig(
                name="api",
                balance="hash",
                hash_key="header:x-user",
                servers=(
                    ServerConfig(
                        url="http://127.0.0.1:5001",
                        scheme="http",
                        host="127.0.0.1",
                        port=5001,
                        weight=3,
                        max_connections=100,
                    ),
                    ServerConfig(
                        url="https://Localhost", scheme="https", host="localhost", port=443
                    ),
                    ServerConfig(
                        url="http://[::1]:5002/", scheme="http", host="::1", port=5002, backup=True
                    ),
                ),
                health=HealthConfig(
                    path="/health", interval=0.5, timeout=2.0, rise=1, fall=4, expect=(200, 204)
                ),
                retries=0,
                max_fails=0,
                fail_timeout=30.0,
                queue_timeout=1.5,
            ),
        )
        self.assertIsInstance(config.backends["api"].health.timeout, float)  # type: ignore[union-attr]
        self.assertEqual(config.backends["web"].balance, "least_conn")
        self.assertEqual(config.backends["web"].health, HealthConfig(path="/", expect=(200,)))
        self.assertEqual(config.backends["db"].balance, "tests.test_config:CustomBalancer")
        self.assertEqual(config.backends["db"].health, HealthConfig())
        self.assertEqual(
            [(s.scheme, s.port) for s in config.backends["db"].servers],
            [("tcp", 5432), ("tcp", 5433)],
        )

    def test_reverse_defaults(self) -> None:
        """
        A reverse listener without C{allow_clients} serves any client (an
        empty tuple: no restriction); routes default to any host, path C{/},
        no rewriting, the client's Host kept; C{Server} and C{X-Powered-By}
        are hidden; no C{Forwarded} header, no trusted proxies.
        """
        config = self.parse(REVERSE + ROUTE + WEB)
        [listener] = config.listeners
        self.assertEqual(listener.kind, "reverse")
        self.assertEqual(listener.allow_clients, ())
        self.assertEqual(listener.anonymity, "anonymous")
        self.assertEqual(listener.trusted_proxies, ())
        self.assertEqual(listener.hide_headers, ("Server", "X-Powered-By"))
        self.assertFalse(listener.forwarded)
        self.assertEqual(listener.routes, (RouteConfig(backend="web"),))
        [route] = listener.routes
        self.assertIsNone(route.host)
        self.assertEqual(route.path, "/")
        self.assertFalse(route.strip_prefix)
        self.assertIsNone(route.rewrite_prefix)
        self.assertTrue(route.preserve_host)

    def test_hide_nothing(self) -> None:
        """
        C{hide_headers = []} hides no response header.
        """
        config = self.parse(REVERSE + "hide_headers = []\n" + ROUTE + WEB)
        self.assertEqual(config.listeners[0].hide_headers, ())

    def test_tcp_defaults(self) -> None:
        """
        A tcp listener without C{allow_clients} accepts any client.
        """
        config = self.parse(TCP + 'backend = "db"\n' + DB)
        [listener] = config.listeners
        self.assertEqual(listener.kind, "tcp")
        self.assertEqual(listener.backend, "db")
        self.assertEqual(listener.allow_clients, ())
        self.assertEqual(listener.filters, ())

    def test_backend_defaults(self) -> None:
        """
        A backend needs only servers: round robin on the client IP key, no
        active health check, 2 retries, ejection after 3 failures for 10
        seconds, 5 seconds of queueing; a server has weight 1, no connection
        limit and is not a backup; C{http://} without port means 80.
        """
        config = self.parse(
            REVERSE + ROUTE + '[backend.web]\nservers = [{ url = "http://example.com" }]\n'
        )
        self.assertEqual(
            config.backends,
            {
                "web": BackendConfig(
                    name="web",
                    servers=(
                        ServerConfig(
                            url="http://example.com", scheme="http", host="example.com", port=80
                        ),
                    ),
                )
            },
        )
        backend = config.backends["web"]
        self.assertEqual(
            (backend.balance, backend.hash_key, backend.health, backend.retries),
            ("round_robin", "client_ip", None, 2),
        )
        self.assertEqual(
            (backend.max_fails, backend.fail_timeout, backend.queue_timeout), (3, 10.0, 5.0)
        )
        [server] = backend.servers
        self.assertEqual((server.weight, server.max_connections, server.backup), (1, None, False))

    def test_health_defaults(self) -> None:
        """
        A health table without C{path} is a TCP connect probe every 5
        seconds, 2 seconds timeout, up after 2 successes, down after 3
        failures, any 2xx/3xx expected.
        """
        config = self.parse(REVERSE + ROUTE + WEB + "health = { interval = 1 }\n")
        self.assertEqual(
            config.backends["web"].health,
            HealthConfig(path=None, interval=1.0, timeout=2.0, rise=2, fall=3, expect=()),
        )

    def test_order_independent(self) -> None:
        """
        Listeners may name backends defined before or after them.
        """
        config = self.parse(WEB + DB + REVERSE + ROUTE + TCP + 'backend = "db"\n')
        self.assertEqual([l.kind for l in config.listeners], ["reverse", "tcp"])

    def test_unused_backend(self) -> None:
        """
        A backend no listener names is valid (and kept).
        """
        config = self.parse(LISTENER + WEB + DB)
        self.assertEqual(sorted(config.backends), ["db", "web"])

    def test_same_path_other_host(self) -> None:
        """
        Routes with the same path but different hosts (or none) are
        distinct.
        """
        config = self.parse(
            REVERSE
            + ROUTE
            + ROUTE.replace("backend", 'host = "a.example"\n  backend')
            + ROUTE.replace("backend", 'host = "*.a.example"\n  backend')
            + WEB
        )
        self.assertEqual(
            [r.host for r in config.listeners[0].routes], [None, "a.example", "*.a.example"]
        )


class ReverseErrorTests(ConfigTestMixin, SynchronousTestCase):
    """
    Every rule of reverse and tcp listeners, routes and backends, with the
    exact line it prints.
    """

    def test_reverse_unknown_keys(self) -> None:
        """
        A reverse listener refuses forward-only and tcp-only keys.
        """
        self.assertEqual(
            self.errors(
                REVERSE + "connect_ports = [443]\nparents = []\n" + "backend = 'web'\n" + ROUTE + WEB
            ),
            [
                "p.toml: listener[0].connect_ports: unknown key",
                "p.toml: listener[0].parents: unknown key",
                "p.toml: listener[0].backend: unknown key",
            ],
        )

    def test_reverse_tls_and_redirect(self) -> None:
        """
        C{tls} needs its C{certificates}; C{redirect_to_https} is only for a
        plain listener, which then has no routes (tests.test_tls covers
        every TLS key with real files).
        """
        self.assertEqual(
            self.errors(
                REVERSE + "tls = {}\nredirect_to_https = true\n" + ROUTE + WEB
            ),
            [
                "p.toml: listener[0].tls.certificates: required key is missing",
                "p.toml: listener[0].redirect_to_https: only on a plain listener"
                " (this one speaks TLS itself)",
                "p.toml: listener[0].route: not used on a listener with redirect_to_https"
                " (every request is redirected)",
            ],
        )

    def test_reverse_values(self) -> None:
        """
        A reverse listener's C{allow_clients} and C{trusted_proxies} are
        CIDRs, C{allow_clients} not empty (leave it out to allow any),
        C{hide_headers} header names, C{forwarded} a boolean, C{anonymity}
        one of three levels, C{filters} existing filters.
        """
        self.assertEqual(
            self.errors(
                REVERSE
                + """
                allow_clients = []
                trusted_proxies = ["10.0.0.0/33"]
                hide_headers = ["Server", "Bad Header", 3]
                forwarded = "yes"
                anonymity = "hidden"
                filters = ["nope"]
                """
                + ROUTE
                + WEB
            ),
            [
                "p.toml: listener[0].allow_clients: must not be empty (it would refuse"
                " every client); leave the key out to allow any",
                "p.toml: listener[0].trusted_proxies[0]: '10.0.0.0/33' is not an IP network (CIDR)",
                "p.toml: listener[0].hide_headers[1]: 'Bad Header' is not a valid header name",
                "p.toml: listener[0].hide_headers[2]: must be a string, not an integer",
                "p.toml: listener[0].forwarded: must be true or false, not a string",
                "p.toml: listener[0].anonymity: unknown anonymity 'hidden'"
                " (expected transparent, anonymous or elite)",
                "p.toml: listener[0].filters[0]: unknown filter 'nope'",
            ],
        )

    def test_routes_shape(self) -> None:
        """
        C{route} is a non-empty array of tables.
        """
        self.assertEqual(
            self.errors(REVERSE + "route = []\n"),
            ["p.toml: listener[0].route: at least one [[listener.route]] is required"],
        )
        self.assertEqual(
            self.errors(REVERSE + "route = { backend = 'web' }\n" + WEB),
            [
                "p.toml: listener[0].route: must be an array of tables"
                " ([[listener.route]]), not a table"
            ],
        )
        self.assertEqual(
            self.errors(REVERSE + "route = ['web']\n" + WEB),
            ["p.toml: listener[0].route[0]: must be a table, not a string"],
        )

    def test_route_keys(self) -> None:
        """
        A route needs a backend; C{host} is a host pattern without port,
        C{path} and C{rewrite_prefix} start with C{/}, the flags are
        booleans, unknown keys are refused.
        """
        self.assertEqual(
            self.errors(
                REVERSE
                + """
                [[listener.route]]
                host = "example.com:8080"
                path = "api/"
                strip_prefix = 1
                preserve_host = "no"
                weight = 3

                [[listener.route]]
                host = "a.*.example.com"
                path = "/a b"
                backend = "web"
                rewrite_prefix = "v2"

                [[listener.route]]
                host = ""
                path = "/x?y=1"
                backend = 7
                filters = "f"
                """
                + WEB
            ),
            [
                "p.toml: listener[0].route[0].host: 'example.com:8080' must not include a port",
                "p.toml: listener[0].route[0].path: 'api/' must start with '/'",
                "p.toml: listener[0].route[0].strip_prefix: must be true or false,"
                " not an integer",
                "p.toml: listener[0].route[0].preserve_host: must be true or false,"
                " not a string",
                "p.toml: listener[0].route[0].weight: unknown key",
                "p.toml: listener[0].route[0].backend: required key is missing",
                "p.toml: listener[0].route[1].host: 'a.*.example.com': '*' is only"
                " allowed as a leading '*.'",
                "p.toml: listener[0].route[1].path: '/a b' must be a path only"
                " (no spaces, '?' or '#')",
                "p.toml: listener[0].route[1].rewrite_prefix: 'v2' must start with '/'",
                "p.toml: listener[0].route[2].host: must not be empty",
                "p.toml: listener[0].route[2].path: '/x?y=1' must be a path only"
                " (no spaces, '?' or '#')",
                "p.toml: listener[0].route[2].backend: must be a string, not an integer",
                "p.toml: listener[0].route[2].filters: must be an array of strings,"
                " not a string",
            ],
        )

    def test_route_references(self) -> None:
        """
        A route names an existing backend of http(s):// servers and
        existing filters.
        """
        self.assertEqual(
            self.errors(
                REVERSE
                + ROUTE.replace('"web"', '"nope"')
                + ROUTE.replace('"web"', '"db"').replace("backend", 'path = "/db/"\n  backend')
                + ROUTE.replace("backend", 'path = "/f/"\n  filters = ["x"]\n  backend')
                + WEB
                + DB
            ),
            [
                "p.toml: listener[0].route[0].backend: unknown backend 'nope'",
                "p.toml: listener[0].route[1].backend: backend 'db' has tcp:// servers;"
                " a reverse route needs http:// or https:// servers",
                "p.toml: listener[0].route[2].filters[0]: unknown filter 'x'",
            ],
        )

    def test_strip_and_rewrite(self) -> None:
        """
        C{strip_prefix = true} and C{rewrite_prefix} contradict each other.
        """
        self.assertEqual(
            self.errors(
                REVERSE
                + ROUTE.replace("backend", 'strip_prefix = true\n  rewrite_prefix = "/v2/"\n  backend')
                + WEB
            ),
            [
                "p.toml: listener[0].route[0].rewrite_prefix: cannot be combined with"
                " strip_prefix = true (rewrite_prefix already replaces the path prefix)"
            ],
        )
        # strip_prefix = false is no contradiction
        config = self.parse(
            REVERSE
            + ROUTE.replace("backend", 'strip_prefix = false\n  rewrite_prefix = "/v2/"\n  backend')
            + WEB
        )
        self.assertEqual(config.listeners[0].routes[0].rewrite_prefix, "/v2/")

    def test_duplicate_routes(self) -> None:
        """
        Two routes with the same host and path are refused, hosts compared
        after normalization; a missing path is C{/}.
        """
        self.assertEqual(
            self.errors(
                REVERSE
                + ROUTE
                + ROUTE.replace("backend", 'path = "/"\n  backend')
                + ROUTE.replace("backend", 'host = "A.example"\n  backend')
                + ROUTE.replace("backend", 'host = "a.example."\n  backend')
                + WEB
            ),
            [
                "p.toml: listener[0].route[1]: duplicate route (any host, path '/';"
                " also route[0])",
                "p.toml: listener[0].route[3]: duplicate route (host 'a.example', path '/';"
                " also route[2])",
            ],
        )

    def test_tcp_listener(self) -> None:
        """
        A tcp listener takes only C{backend}, C{allow_clients} (not empty)
        and C{filters}; its backend must exist and have tcp:// servers.
        """
        self.assertEqual(
            self.errors(
                TCP
                + 'backend = "web"\nanonymity = "elite"\nallow_clients = []\n'
                + TCP.replace('"db"', '"db2"')
                + 'backend = "nope"\nfilters = ["x"]\n'
                + TCP.replace('"db"', '"db3"')
                + "backend = 5\nroute = []\n"
                + WEB
            ),
            [
                "p.toml: listener[0].backend: backend 'web' has http(s):// servers;"
                " a tcp listener needs tcp:// servers",
                "p.toml: listener[0].anonymity: unknown key",
                "p.toml: listener[0].allow_clients: must not be empty (it would refuse"
                " every client); leave the key out to allow any",
                "p.toml: listener[1].backend: unknown backend 'nope'",
                "p.toml: listener[1].filters[0]: unknown filter 'x'",
                "p.toml: listener[2].backend: must be a string, not an integer",
                "p.toml: listener[2].route: unknown key",
            ],
        )

    def test_backend_tables(self) -> None:
        """
        C{backend} is a table of tables; each needs servers, a non-empty
        array of tables; unknown keys are refused.
        """
        self.assertEqual(
            self.errors(LISTENER + "[backend]\nx = 1\n"),
            ["p.toml: backend.x: must be a table, not an integer"],
        )
        self.assertEqual(
            self.errors("backend = []\n" + LISTENER),
            ["p.toml: backend: must be a table, not an array"],
        )
        self.assertEqual(
            self.errors(
                LISTENER
                + """
                [backend.a]
                balance = "hash"
                [backend.b]
                servers = []
                [backend.c]
                servers = "http://127.0.0.1:1"
                [backend.d]
                servers = ["http://127.0.0.1:1"]
                colour = "red"
                """
            ),
            [
                "p.toml: backend.a.servers: required key is missing",
                "p.toml: backend.b.servers: must not be empty",
                "p.toml: backend.c.servers: must be an array of tables, not a string",
                "p.toml: backend.d.servers[0]: must be a table, not a string",
                "p.toml: backend.d.colour: unknown key",
            ],
        )

    def test_server_urls(self) -> None:
        """
        A server URL is C{http://host[:port]}, C{https://host[:port]} or
        C{tcp://host:port}: no other scheme, no path, query or credentials,
        a real port, a host that is not a wildcard.
        """
        urls = [
            "ftp://127.0.0.1:21",
            "127.0.0.1:5001",
            "http://127.0.0.1:5001/app",
            "http://127.0.0.1:5001?x=1",
            "http://user:pw@127.0.0.1:5001",
            "http://127.0.0.1:0",
            "http://127.0.0.1:70000",
            "tcp://127.0.0.1",
            "http://",
            "http://*.example.com",
            "http://a_b..c",
        ]
        servers = ", ".join(f'{{ url = "{u}" }}' for u in urls)
        lines = self.errors(LISTENER + f"[backend.x]\nservers = [{servers}]\n")
        k = "p.toml: backend.x.servers"
        self.assertEqual(
            lines,
            [
                f"{k}[0].url: server URL 'ftp://127.0.0.1:21' must start with"
                " http://, https:// or tcp://",
                f"{k}[1].url: server URL '127.0.0.1:5001' must start with"
                " http://, https:// or tcp://",
                f"{k}[2].url: server URL 'http://127.0.0.1:5001/app' must be"
                " 'http://host:port' only (no path or query)",
                f"{k}[3].url: server URL 'http://127.0.0.1:5001?x=1' must be"
                " 'http://host:port' only (no path or query)",
                f"{k}[4].url: server URL 'http://user:pw@127.0.0.1:5001':"
                " credentials are not supported",
                f"{k}[5].url: server URL 'http://127.0.0.1:0': port 0 is not valid",
                f"{k}[6].url: invalid server URL 'http://127.0.0.1:70000':"
                " Port out of range 0-65535",
                f"{k}[7].url: server URL 'tcp://127.0.0.1' needs a port ('tcp://host:port')",
                f"{k}[8].url: server URL 'http://' has no host",
                f"{k}[9].url: server URL 'http://*.example.com': '*.example.com':"
                " a server's host cannot be a wildcard",
                f"{k}[10].url: server URL 'http://a_b..c': 'a_b..c' has an empty label",
            ],
        )

    def test_server_keys(self) -> None:
        """
        A server needs a URL; C{weight} and C{max_connections} are integers
        of at least 1, C{backup} a boolean; TLS files must exist, and the
        TLS keys are only for https:// servers.
        """
        lines = self.errors(
            LISTENER
            + """
            [backend.x]
            servers = [
              { weight = 1 },
              { url = "http://127.0.0.1:1", weight = 0, max_connections = 0, backup = 1 },
              { url = "https://127.0.0.1:2", weight = 1.5, ca = "ca.pem", verify = false },
              { url = 5 },
              { url = "http://127.0.0.1:3", verify = false, server_name = "a.example" },
            ]
            """
        )
        # the message ends with the resolved path, in a fresh folder
        missing = "p.toml: backend.x.servers[2].ca: file 'ca.pem' not found ("
        self.assertTrue(lines[5].startswith(missing) and lines[5].endswith("ca.pem)"), lines[5])
        lines[5] = missing + "...)"
        self.assertEqual(
            lines,
            [
                "p.toml: backend.x.servers[0].url: required key is missing",
                "p.toml: backend.x.servers[1].weight: must be an integer >= 1, not 0",
                "p.toml: backend.x.servers[1].max_connections: must be an integer >= 1, not 0",
                "p.toml: backend.x.servers[1].backup: must be true or false, not an integer",
                "p.toml: backend.x.servers[2].weight: must be an integer, not a float",
                missing + "...)",
                "p.toml: backend.x.servers[3].url: must be a string, not an integer",
                "p.toml: backend.x.servers[4].verify: only for https:// servers"
                " (this one is http://)",
                "p.toml: backend.x.servers[4].server_name: only for https:// servers"
                " (this one is http://)",
            ],
        )

    def test_server_mix_and_duplicates(self) -> None:
        """
        A backend's servers are all http(s):// or all tcp://, and each
        address appears once (an explicit default port is the same address).
        """
        self.assertEqual(
            self.errors(
                LISTENER
                + """
                [backend.x]
                servers = [
                  { url = "http://127.0.0.1" },
                  { url = "https://127.0.0.1" },
                  { url = "tcp://127.0.0.1:80" },
                  { url = "HTTP://127.0.0.1:80/" },
                ]
                """
            ),
            [
                "p.toml: backend.x.servers[2].url: a backend's servers are all http(s)://"
                " or all tcp:// ('tcp://127.0.0.1:80' here, 'http://127.0.0.1' in servers[0])",
                "p.toml: backend.x.servers[3].url: duplicate server 'HTTP://127.0.0.1:80/'"
                " (also servers[0])",
            ],
        )

    def test_mixed_backend_named(self) -> None:
        """
        A route naming a backend of mixed servers gets no second error:
        the backend's own line says what is wrong.
        """
        self.assertEqual(
            self.errors(
                REVERSE
                + ROUTE
                + '[backend.web]\nservers = [{url = "http://127.0.0.1:1"},'
                ' {url = "tcp://127.0.0.1:2"}]\n'
            ),
            [
                "p.toml: backend.web.servers[1].url: a backend's servers are all http(s)://"
                " or all tcp:// ('tcp://127.0.0.1:2' here, 'http://127.0.0.1:1' in servers[0])"
            ],
        )

    def test_balance(self) -> None:
        """
        C{balance} is a built-in name or the dotted path of an importable
        custom balancer.
        """
        head = '[backend.{0}]\nservers = [{{ url = "http://127.0.0.1:1" }}]\n'
        self.assertEqual(
            self.errors(
                LISTENER
                + head.format("a")
                + 'balance = "leastconn"\n'
                + head.format("b")
                + 'balance = "no_such_module_xyz:B"\n'
                + head.format("c")
                + 'balance = "tests.test_config:Missing"\n'
                + head.format("d")
                + "balance = 1\n"
            ),
            [
                "p.toml: backend.a.balance: unknown balance 'leastconn' (expected round_robin,"
                " least_conn, random_two, hash, or a custom balancer 'package.module:Name')",
                "p.toml: backend.b.balance: cannot load balancer: cannot import"
                " 'no_such_module_xyz': No module named 'no_such_module_xyz'",
                "p.toml: backend.c.balance: cannot load balancer: module"
                " 'tests.test_config' has no 'Missing'",
                "p.toml: backend.d.balance: must be a string, not an integer",
            ],
        )
        for name in ("round_robin", "least_conn", "random_two", "hash"):
            config = self.parse(LISTENER + head.format("a") + f'balance = "{name}"\n')
            self.assertEqual(config.backends["a"].balance, name)

    def test_hash_key(self) -> None:
        """
        C{hash_key} is C{client_ip}, C{header:NAME} or C{cookie:NAME}; it
        only goes with C{balance = "hash"} (or a custom balancer), and a
        backend of tcp:// servers has no headers or cookies to hash on.
        """
        http = '[backend.{0}]\nservers = [{{ url = "http://127.0.0.1:1" }}]\n'
        tcp = '[backend.{0}]\nservers = [{{ url = "tcp://127.0.0.1:1" }}]\n'
        self.assertEqual(
            self.errors(
                LISTENER
                + http.format("a")
                + 'balance = "hash"\nhash_key = "ip"\n'
                + http.format("b")
                + 'balance = "hash"\nhash_key = "header:"\n'
                + http.format("c")
                + 'balance = "hash"\nhash_key = "cookie:a b"\n'
                + http.format("d")
                + 'hash_key = "client_ip"\n'
                + tcp.format("e")
                + 'balance = "hash"\nhash_key = "cookie:sid"\n'
                + http.format("f")
                + 'balance = "least_conn"\nhash_key = "header:X-User"\n'
            ),
            [
                "p.toml: backend.a.hash_key: unknown hash_key 'ip' (expected 'client_ip',"
                " 'header:NAME' or 'cookie:NAME')",
                "p.toml: backend.b.hash_key: 'header:': '' is not a valid header name",
                "p.toml: backend.c.hash_key: 'cookie:a b': 'a b' is not a valid cookie name",
                "p.toml: backend.d.hash_key: only applies to balance = 'hash'"
                " (this backend's balance is 'round_robin')",
                "p.toml: backend.e.hash_key: 'cookie:sid' needs HTTP; a backend of tcp://"
                " servers can only hash on 'client_ip'",
                "p.toml: backend.f.hash_key: only applies to balance = 'hash'"
                " (this backend's balance is 'least_conn')",
            ],
        )
        config = self.parse(
            LISTENER
            + http.format("a")
            + 'balance = "tests.test_config:CustomBalancer"\nhash_key = "cookie:SID"\n'
            + tcp.format("b")
            + 'balance = "hash"\nhash_key = "client_ip"\n'
        )
        self.assertEqual(config.backends["a"].hash_key, "cookie:SID")
        self.assertEqual(config.backends["b"].hash_key, "client_ip")

    def test_health(self) -> None:
        """
        A health check's path starts with C{/}; interval and timeout are
        seconds > 0; rise and fall integers >= 1; expect a status or list
        of statuses 100-599, only with a path; unknown keys are refused.
        """
        head = '[backend.{0}]\nservers = [{{ url = "http://127.0.0.1:1" }}]\n'
        self.assertEqual(
            self.errors(
                LISTENER
                + head.format("a")
                + 'health = { path = "health", interval = 0, timeout = -1, rise = 0,'
                ' fall = 1.5, expect = [200, 99, 600, "204"], method = "HEAD" }\n'
                + head.format("b")
                + "health = { expect = 200 }\n"
                + head.format("c")
                + 'health = { path = "/", expect = "2xx" }\n'
                + head.format("d")
                + 'health = "/health"\n'
            ),
            [
                "p.toml: backend.a.health.path: 'health' must start with '/'",
                "p.toml: backend.a.health.interval: must be a number of seconds > 0, not 0",
                "p.toml: backend.a.health.timeout: must be a number of seconds > 0, not -1",
                "p.toml: backend.a.health.rise: must be an integer >= 1, not 0",
                "p.toml: backend.a.health.fall: must be an integer, not a float",
                "p.toml: backend.a.health.expect[1]: status 99 is out of range 100-599",
                "p.toml: backend.a.health.expect[2]: status 600 is out of range 100-599",
                "p.toml: backend.a.health.expect[3]: must be an HTTP status, not a string",
                "p.toml: backend.a.health.method: unknown key",
                "p.toml: backend.b.health.expect: needs a path (without one the check is a"
                " TCP connect probe, which has no status)",
                "p.toml: backend.c.health.expect: must be a status or an array of statuses,"
                " not a string",
                "p.toml: backend.d.health: must be a table, not a string",
            ],
        )

    def test_retry_settings(self) -> None:
        """
        C{retries} and C{max_fails} are integers >= 0; C{fail_timeout} and
        C{queue_timeout} seconds > 0.
        """
        self.assertEqual(
            self.errors(
                LISTENER
                + WEB
                + "retries = -1\nmax_fails = true\nfail_timeout = 0\nqueue_timeout = \"5\"\n"
            ),
            [
                "p.toml: backend.web.retries: must be an integer >= 0, not -1",
                "p.toml: backend.web.max_fails: must be an integer, not a boolean",
                "p.toml: backend.web.fail_timeout: must be a number of seconds > 0, not 0",
                "p.toml: backend.web.queue_timeout: must be a number of seconds, not a string",
            ],
        )

    def test_queue_size(self) -> None:
        """
        C{queue_size} (default 1000) is an integer >= 0 of requests that may
        wait per backend.
        """
        config = self.parse(REVERSE + ROUTE + WEB + "queue_size = 0\n")
        self.assertEqual(config.backends["web"].queue_size, 0)
        config = self.parse(REVERSE + ROUTE + WEB)
        self.assertEqual(config.backends["web"].queue_size, 1000)
        self.assertEqual(
            self.errors(LISTENER + WEB + "queue_size = -1\n"),
            ["p.toml: backend.web.queue_size: must be an integer >= 0, not -1"],
        )
        self.assertEqual(
            self.errors(LISTENER + WEB + "queue_size = 1.5\n"),
            ["p.toml: backend.web.queue_size: must be an integer, not a float"],
        )

    def test_broken_backend_named(self) -> None:
        """
        A route naming a backend that has its own errors gets no extra
        error: only the backend's problems are printed.
        """
        self.assertEqual(
            self.errors(REVERSE + ROUTE + "[backend.web]\nservers = []\n"),
            ["p.toml: backend.web.servers: must not be empty"],
        )


class SplitEndpointTests(SynchronousTestCase):
    """
    L{split_endpoint}: an endpoint string's positional and keyword
    arguments, as Twisted's C{serverFromString} reads them.
    """

    def test_positional(self) -> None:
        """
        Fields are separated by colons; the endpoint type is the first
        positional argument.
        """
        self.assertEqual(split_endpoint("tcp:80"), (["tcp", "80"], {}))
        self.assertEqual(split_endpoint("unix:/run/proxy.sock"), (["unix", "/run/proxy.sock"], {}))

    def test_keywords(self) -> None:
        """
        A field with an C{=} is a keyword argument, wherever it stands; the
        positional arguments keep their order.
        """
        self.assertEqual(
            split_endpoint("tcp:80:interface=127.0.0.1:backlog=5"),
            (["tcp", "80"], {"interface": "127.0.0.1", "backlog": "5"}),
        )
        self.assertEqual(
            split_endpoint("systemd:domain=INET:index=0"),
            (["systemd"], {"domain": "INET", "index": "0"}),
        )
        self.assertEqual(split_endpoint("a:k=v:b"), (["a", "b"], {"k": "v"}))

    def test_first_equals_splits(self) -> None:
        """
        A keyword field is split at its first C{=}: the value may contain
        more.
        """
        self.assertEqual(split_endpoint("x:k=a=b"), (["x"], {"k": "a=b"}))

    def test_last_keyword_wins(self) -> None:
        """
        A keyword given twice keeps its last value.
        """
        self.assertEqual(split_endpoint("x:k=1:k=2"), (["x"], {"k": "2"}))

    def test_escaped_colon(self) -> None:
        """
        A backslash before a colon makes it part of the field (an IPv6
        interface, a Windows path).
        """
        self.assertEqual(
            split_endpoint("tcp6:3128:interface=\\:\\:1"),
            (["tcp6", "3128"], {"interface": "::1"}),
        )
        self.assertEqual(
            split_endpoint("ssl:443:privateKey=C\\:/key.pem:certKey=C\\:/cert.pem"),
            (["ssl", "443"], {"privateKey": "C:/key.pem", "certKey": "C:/cert.pem"}),
        )

    def test_escaped_equals(self) -> None:
        """
        A backslash before C{=} makes it literal: the field stays
        positional, or the C{=} belongs to the key.
        """
        self.assertEqual(split_endpoint("unix:/tmp/a\\=b"), (["unix", "/tmp/a=b"], {}))
        self.assertEqual(split_endpoint("x:a\\=b=c"), (["x"], {"a=b": "c"}))

    def test_escaped_backslash(self) -> None:
        """
        A backslash before a backslash, or before any other character, is
        that character.
        """
        self.assertEqual(split_endpoint("unix:C\\\\dir"), (["unix", "C\\dir"], {}))
        self.assertEqual(split_endpoint("\\tcp:\\80"), (["tcp", "80"], {}))

    def test_empty_fields(self) -> None:
        """
        Empty fields are empty arguments: an empty string is one empty
        positional argument; an empty key or value is kept.
        """
        self.assertEqual(split_endpoint(""), ([""], {}))
        self.assertEqual(split_endpoint("tcp:"), (["tcp", ""], {}))
        self.assertEqual(split_endpoint("tcp::80"), (["tcp", "", "80"], {}))
        self.assertEqual(split_endpoint("x:=v:k="), (["x"], {"": "v", "k": ""}))

    def test_trailing_backslash(self) -> None:
        """
        A backslash at the very end escapes nothing: a C{ValueError}.
        """
        with self.assertRaises(ValueError) as caught:
            split_endpoint("tcp:80\\")
        self.assertEqual(str(caught.exception), "it ends with a backslash, which escapes nothing")


class EndpointProblemTests(SynchronousTestCase):
    """
    L{endpoint_problem}: why an endpoint string is not valid, checked
    without listening.
    """

    def test_valid(self) -> None:
        """
        Valid strings have no problem, escaped colons included.
        """
        for endpoint in (
            "tcp:0",
            "tcp:port=3128",
            "tcp6:3128:interface=\\:\\:1",
            "unix:/tmp/p.sock",
        ):
            self.assertIsNone(endpoint_problem(endpoint), endpoint)

    def test_port_keyword(self) -> None:
        """
        A port given as a keyword is checked like a positional one.
        """
        self.assertEqual(
            endpoint_problem("tcp:port=70000"),
            "invalid endpoint 'tcp:port=70000': port 70000 is out of range 0-65535",
        )
        self.assertEqual(
            endpoint_problem("tcp6:port=x"),
            "invalid endpoint 'tcp6:port=x': port 'x' is not a number",
        )

    def test_systemd(self) -> None:
        """
        A systemd endpoint needs one address family and exactly one of
        C{index} and C{name}; its descriptors are not looked for.
        """
        self.assertIsNone(endpoint_problem("systemd:domain=INET6:name=web"))
        self.assertEqual(
            endpoint_problem("systemd:domain=INET:index=0:name=web"),
            "invalid endpoint 'systemd:domain=INET:index=0:name=web':"
            " specify exactly one of descriptor index or name",
        )
        self.assertEqual(
            endpoint_problem("systemd:domain=INET:bogus=1"),
            "invalid endpoint 'systemd:domain=INET:bogus=1': unknown systemd option 'bogus'",
        )
        self.assertEqual(
            endpoint_problem("systemd:index=0"),
            "invalid endpoint 'systemd:index=0': systemd endpoints take one domain,"
            " e.g. 'systemd:domain=INET:index=0'",
        )
        self.assertEqual(
            endpoint_problem("systemd:domain=INET:index=x"),
            "invalid endpoint 'systemd:domain=INET:index=x':"
            " invalid literal for int() with base 10: 'x'",
        )


class ExampleConfigTests(SynchronousTestCase):
    def test_examples_load(self) -> None:
        """
        Every C{etc/*.toml} example loads as shipped, without any error
        (the files they name, demo certificates and keys included, are in
        C{etc/}).
        """
        paths = sorted(glob.glob(os.path.join(ETC, "*.toml")))
        self.assertTrue(paths, f"no examples in {ETC}")
        for path in paths:
            try:
                load_config(path)
            except ConfigError as e:
                self.fail("\n".join(e.lines()))


class ConnectionLimitConfigTests(ConfigTestMixin, SynchronousTestCase):
    """
    C{[proxy] max_connections} and the listeners' C{backlog}.
    """

    def test_defaults(self) -> None:
        """
        10000 connections for the process, a listen queue of 1024.
        """
        config = self.parse(LISTENER)
        self.assertEqual(config.proxy.max_connections, 10000)
        self.assertEqual(config.listeners[0].backlog, 1024)

    def test_values(self) -> None:
        """
        Any integer >= 1; a backlog on every kind of listener (a custom
        listener's factory does not see it among its options).
        """
        config = self.parse(
            "[proxy]\nmax_connections = 1\n"
            + LISTENER
            + "backlog = 1\n"
            + TCP
            + "backend = \"db\"\nbacklog = 65535\n"
            + DB
            + '[[listener]]\nname = "echo"\nkind = "custom"\nendpoint = "unix:/tmp/x.sock"\n'
            'factory = "tests.test_config:echo_factory"\nbacklog = 5\ngreeting = "hi"\n'
        )
        self.assertEqual(config.proxy.max_connections, 1)
        self.assertEqual([lc.backlog for lc in config.listeners], [1, 65535, 5])
        self.assertEqual(config.listeners[2].options, {"greeting": "hi"})

    def test_errors(self) -> None:
        """
        Integers only, at least 1; a backlog at most 65535 and not also in
        the endpoint string.
        """
        self.assertEqual(
            self.errors("[proxy]\nmax_connections = 0\n" + LISTENER + "backlog = 0\n"),
            [
                "p.toml: proxy.max_connections: must be an integer >= 1, not 0",
                "p.toml: listener[0].backlog: must be an integer from 1 to 65535, not 0",
            ],
        )
        self.assertEqual(
            self.errors("[proxy]\nmax_connections = 1.5\n" + LISTENER + "backlog = true\n"),
            [
                "p.toml: proxy.max_connections: must be an integer, not a float",
                "p.toml: listener[0].backlog: must be an integer, not a boolean",
            ],
        )
        self.assertEqual(
            self.errors(
                '[[listener]]\nname = "out"\nkind = "forward"\n'
                'endpoint = "tcp:3128:backlog=10"\nbacklog = 65536\n'
            ),
            ["p.toml: listener[0].backlog: must be an integer from 1 to 65535, not 65536"],
        )
        self.assertEqual(
            self.errors(
                '[[listener]]\nname = "out"\nkind = "forward"\n'
                'endpoint = "tcp:3128:backlog=10"\nbacklog = 20\n'
            ),
            [
                "p.toml: listener[0].backlog: the endpoint sets backlog=10 already"
                " (keep one of the two)"
            ],
        )

    def test_with_backlog(self) -> None:
        """
        The backlog is added to tcp, tcp6, ssl and unix endpoint strings
        that have none; others are left as they are.
        """
        from twisted_proxy.config.endpoints import with_backlog

        self.assertEqual(with_backlog("tcp:80", 1024), "tcp:80:backlog=1024")
        self.assertEqual(
            with_backlog("tcp6:80:interface=\\:\\:1", 9), "tcp6:80:interface=\\:\\:1:backlog=9"
        )
        self.assertEqual(
            with_backlog("ssl:443:privateKey=k.pem", 9), "ssl:443:privateKey=k.pem:backlog=9"
        )
        self.assertEqual(with_backlog("unix:/run/p.sock", 9), "unix:/run/p.sock:backlog=9")
        self.assertEqual(with_backlog("tcp:80:backlog=5", 9), "tcp:80:backlog=5")
        self.assertEqual(
            with_backlog("systemd:domain=INET:index=0", 9), "systemd:domain=INET:index=0"
        )
        for description in ("tcp:80:backlog=1024", "unix:/run/p.sock:backlog=9"):
            self.assertIsNone(endpoint_problem(description))
