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
from twisted_proxy.model import (
    DEFAULT_ALLOW_CLIENTS,
    AdminConfig,
    Config,
    ParentProxy,
    ProxySettings,
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
            tunnel_idle_timeout = 5
            max_head_size = 1024
            pool_max_idle = 0
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
                tunnel_idle_timeout=5.0,
                max_head_size=1024,
                pool_max_idle=0,
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
        an integer of at least 0; floats and booleans are not integers.
        """
        lines = self.errors("[proxy]\nmax_head_size = 1000\npool_max_idle = -1\n" + LISTENER)
        self.assertEqual(
            lines,
            [
                "p.toml: proxy.max_head_size: must be an integer >= 1024, not 1000",
                "p.toml: proxy.pool_max_idle: must be an integer >= 0, not -1",
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
        An unknown kind is refused; reverse and tcp are not supported yet.
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
                "p.toml: listener[1].kind: kind 'reverse' is not supported yet",
                "p.toml: listener[2].kind: kind 'tcp' is not supported yet",
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
                "p.toml: filter.b.type: unknown filter type 'nosuch' (built-in: acl;"
                " a custom filter is 'package.module:name')",
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


class ExampleConfigTests(SynchronousTestCase):
    def test_examples_load(self) -> None:
        """
        Every C{etc/*.toml} example loads without any error.
        """
        paths = sorted(glob.glob(os.path.join(ETC, "*.toml")))
        self.assertTrue(paths, f"no examples in {ETC}")
        for path in paths:
            try:
                load_config(path)
            except ConfigError as e:
                self.fail("\n".join(e.lines()))
