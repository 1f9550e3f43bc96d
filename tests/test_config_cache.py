"""
Tests for L{twisted_proxy.config.caches} and the keys of contract v2 that go
with it: C{[cache.NAME]} tables, sizes, C{[proxy] spool_path} and
C{spool_max}, listener and route C{cache}, C{response_buffer} and
C{request_buffer}. Every mistake is one C{"FILE: key.path: message"} line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, List

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.config import ConfigError, default_config, load_config, parse_config
from twisted_proxy.config.checks import (
    SIZE_FORMS,
    Checks,
    folder_problem,
    format_size,
    parse_size,
)
from twisted_proxy.filters import ErrorList
from twisted_proxy.model import (
    CacheConfig,
    Config,
    GiB,
    KiB,
    ListenerConfig,
    MiB,
    ProxySettings,
    RouteConfig,
)

FORWARD = """
[[listener]]
name = "out"
kind = "forward"
endpoint = "tcp:3128:interface=127.0.0.1"
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
backend = "db"
"""

DB = """
[backend.db]
servers = [{ url = "tcp://127.0.0.1:5432" }]
"""

EDGE = """
[cache.edge]
"""

#: The message of a value that is not a size.
NOT_A_SIZE = f"is not a size; use {SIZE_FORMS}"


class CacheConfigMixin:
    """
    Parse TOML text as the file C{p.toml} in a fresh temporary folder
    (C{self.base}).
    """

    base: str

    def setUp(self) -> None:
        self.base = os.path.realpath(tempfile.mkdtemp(prefix="twisted-proxy-test-"))
        self.addCleanup(shutil.rmtree, self.base, True)  # type: ignore[attr-defined]

    def parse(self, text: str) -> Config:
        return parse_config(text, "p.toml", self.base)

    def errors(self, text: str) -> List[str]:
        """
        The error lines C{text} produces (failing if it is valid).
        """
        try:
            parse_config(text, "p.toml", self.base)
        except ConfigError as e:
            return e.lines()
        raise AssertionError("the configuration was accepted")

    def at(self, *parts: str) -> str:
        """
        The absolute path of C{parts} under the configuration's folder.
        """
        return os.path.join(self.base, *parts)


class SizeTests(SynchronousTestCase):
    """
    L{parse_size}, L{format_size} and L{Checks.size}: an integer of bytes
    or a string of a number and a unit.
    """

    def test_units(self) -> None:
        """
        B and the decimal units are powers of 1000, the binary units powers
        of 1024; the unit's case does not matter; a space may separate it
        from the number; a bare number string is bytes.
        """
        cases = {
            "0": 0,
            "4096": 4096,
            "10B": 10,
            "10 B": 10,
            "64KiB": 64 * 1024,
            "64 KiB": 64 * 1024,
            "64kib": 64 * 1024,
            "64KIB": 64 * 1024,
            "10MiB": 10 * 1024**2,
            "1GiB": 1024**3,
            "2TiB": 2 * 1024**4,
            "5KB": 5000,
            "5kb": 5000,
            "500MB": 500 * 1000**2,
            "3GB": 3 * 1000**3,
            "1TB": 1000**4,
            "1.5GiB": 1610612736,
            "0.5 MiB": 512 * 1024,
            ".5KiB": 512,
            "0.1KB": 100,
            "1.3KiB": 1331,  # rounded down to a whole byte
        }
        for text, expected in cases.items():
            self.assertEqual(parse_size(text), expected, text)
            self.assertIsInstance(parse_size(text), int)

    def test_not_sizes(self) -> None:
        """
        Unknown units, exponents, two spaces, a fraction of a byte and
        words are not sizes.
        """
        for text in ["", "GiB", "1XB", "1 K", "1e3", "1  MiB", "1.5B", "1.5", "1,5GiB", "ten"]:
            self.assertIsNone(parse_size(text), text)

    def test_negative(self) -> None:
        """
        A signed size parses to its sign (the check refuses it).
        """
        self.assertEqual(parse_size("-1MiB"), -MiB)

    def test_format(self) -> None:
        """
        Sizes in messages use the largest binary unit that divides them.
        """
        self.assertEqual(format_size(MiB), "1MiB")
        self.assertEqual(format_size(10 * GiB), "10GiB")
        self.assertEqual(format_size(1536 * MiB), "1536MiB")
        self.assertEqual(format_size(1), "1 byte")
        self.assertEqual(format_size(1000), "1000 bytes")
        self.assertEqual(format_size(0), "0 bytes")

    def check(self, value: Any, minimum: int = 0) -> Any:
        errors = ErrorList()
        result = Checks(errors, "/").size(value, "k", minimum)
        return result, errors.items

    def test_check_values(self) -> None:
        """
        L{Checks.size} takes integers and size strings.
        """
        self.assertEqual(self.check(0), (0, []))
        self.assertEqual(self.check(1234), (1234, []))
        self.assertEqual(self.check("64KiB"), (64 * KiB, []))
        self.assertEqual(self.check("1MiB", MiB), (MiB, []))

    def test_check_problems(self) -> None:
        """
        Each problem is one message: the accepted forms for a bad string or
        type, the bound for a value under the minimum, the 64-bit limit.
        """
        self.assertEqual(
            self.check("1XB"), (None, [("k", f"'1XB' {NOT_A_SIZE}")])
        )
        self.assertEqual(
            self.check(1.5), (None, [("k", f"must be a size ({SIZE_FORMS}), not a float")])
        )
        self.assertEqual(
            self.check(True), (None, [("k", f"must be a size ({SIZE_FORMS}), not a boolean")])
        )
        self.assertEqual(self.check(-1), (None, [("k", "must not be negative, not -1")]))
        self.assertEqual(
            self.check("-1KiB"), (None, [("k", "must not be negative, not '-1KiB'")])
        )
        self.assertEqual(
            self.check("512KiB", MiB), (None, [("k", "must be at least 1MiB, not '512KiB'")])
        )
        self.assertEqual(
            self.check(2**63),
            (None, [("k", f"{2**63!r} is too large (at most {2**63 - 1} bytes)")]),
        )


class CacheDefaultsTests(CacheConfigMixin, SynchronousTestCase):
    """
    A C{[cache.NAME]} table may be empty: every key has a default.
    """

    def test_no_caches(self) -> None:
        """
        A configuration without C{[cache.*]} has no caches and listeners
        and routes use none.
        """
        config = self.parse(FORWARD + REVERSE + ROUTE + WEB)
        self.assertEqual(dict(config.caches), {})
        forward, reverse = config.listeners
        self.assertIsNone(forward.cache)
        self.assertIsNone(reverse.cache)
        self.assertIsNone(reverse.routes[0].cache)
        self.assertIsNone(reverse.routes[0].cache_for(reverse))

    def test_defaults(self) -> None:
        """
        An empty table is a cache in C{cache/NAME} next to the file, of
        1 GiB on disk, 64 MiB in memory, objects up to 256 MiB, a 5 s lock,
        every host, tagged by C{Cache-Tag}.
        """
        config = self.parse(EDGE + FORWARD)
        self.assertEqual(
            config.caches,
            {
                "edge": CacheConfig(
                    name="edge",
                    path=self.at("cache", "edge"),
                    max_size=GiB,
                    memory=64 * MiB,
                    max_object_size=256 * MiB,
                    lock_timeout=5.0,
                    domains=(),
                    bypass_domains=(),
                    tag_header="Cache-Tag",
                )
            },
        )
        self.assertEqual(
            CacheConfig(name="x", path="/x"),
            CacheConfig(
                name="x",
                path="/x",
                max_size=GiB,
                memory=64 * MiB,
                max_object_size=256 * MiB,
                lock_timeout=5.0,
                domains=(),
                bypass_domains=(),
                tag_header="Cache-Tag",
            ),
        )

    def test_folder_not_created(self) -> None:
        """
        Checking the configuration does not create the cache's folder (it
        is created at start).
        """
        self.parse(EDGE + FORWARD)
        self.assertFalse(os.path.exists(self.at("cache")))

    def test_default_object_size_bounded(self) -> None:
        """
        With a C{max_size} under 256 MiB and no C{max_object_size}, objects
        may be as large as the whole cache.
        """
        config = self.parse('[cache.small]\nmax_size = "100MiB"\n' + FORWARD)
        self.assertEqual(config.caches["small"].max_object_size, 100 * MiB)


class CacheValuesTests(CacheConfigMixin, SynchronousTestCase):
    """
    Every key of a C{[cache.NAME]} table, valid.
    """

    def test_all_keys(self) -> None:
        """
        Each key is read: sizes with units, seconds as integer or float,
        domain patterns normalized, the tag header as written.
        """
        config = self.parse(
            """
            [cache.edge]
            path = "data/edge"
            max_size = "10GiB"
            memory = 0
            max_object_size = "1GiB"
            lock_timeout = 2.5
            domains = ["*.ReadTheDocs.io", "docs.*", "cdn.example.com.", "bücher.example"]
            bypass_domains = ["private.example.com", "192.0.2.1"]
            tag_header = "Surrogate-Key"
            """
            + FORWARD
        )
        self.assertEqual(
            config.caches["edge"],
            CacheConfig(
                name="edge",
                path=self.at("data", "edge"),
                max_size=10 * GiB,
                memory=0,
                max_object_size=GiB,
                lock_timeout=2.5,
                domains=("*.readthedocs.io", "docs.*", "cdn.example.com", "xn--bcher-kva.example"),
                bypass_domains=("private.example.com", "192.0.2.1"),
                tag_header="Surrogate-Key",
            ),
        )
        self.assertIsInstance(config.caches["edge"].lock_timeout, float)

    def test_integer_sizes(self) -> None:
        """
        Sizes may be plain integers of bytes; C{max_object_size} may equal
        C{max_size}; the smallest C{max_size} is 1 MiB.
        """
        config = self.parse(
            f"""
            [cache.c]
            max_size = {MiB}
            memory = 1
            max_object_size = {MiB}
            lock_timeout = 1
            """
            + FORWARD
        )
        cache = config.caches["c"]
        self.assertEqual((cache.max_size, cache.memory, cache.max_object_size), (MiB, 1, MiB))
        self.assertEqual(cache.lock_timeout, 1.0)

    def test_empty_domain_lists(self) -> None:
        """
        Empty C{domains} (every host) and C{bypass_domains} are fine.
        """
        config = self.parse('[cache.c]\ndomains = []\nbypass_domains = []\n' + FORWARD)
        self.assertEqual(config.caches["c"].domains, ())
        self.assertEqual(config.caches["c"].bypass_domains, ())

    def test_relative_path(self) -> None:
        """
        A relative C{path} is resolved against the configuration file's
        folder (not the working folder), and normalized.
        """
        os.makedirs(self.at("conf"))
        path = self.at("conf", "p.toml")
        with open(path, "w") as f:
            f.write('[cache.a]\npath = "../store/./a"\n[cache.b]\n' + FORWARD)
        config = load_config(path)
        self.assertEqual(config.caches["a"].path, self.at("store", "a"))
        self.assertEqual(config.caches["b"].path, self.at("conf", "cache", "b"))

    def test_absolute_existing_path(self) -> None:
        """
        An absolute path to an existing writable folder is kept.
        """
        os.makedirs(self.at("somewhere"))
        config = self.parse(f'[cache.c]\npath = "{self.at("somewhere")}"\n' + FORWARD)
        self.assertEqual(config.caches["c"].path, self.at("somewhere"))

    def test_names(self) -> None:
        """
        Cache names are simple names: letters, digits, C{-} and C{_},
        starting with a letter.
        """
        config = self.parse('[cache.A-b_9]\n[cache."x"]\n' + FORWARD)
        self.assertEqual(sorted(config.caches), ["A-b_9", "x"])


class CacheErrorsTests(CacheConfigMixin, SynchronousTestCase):
    """
    Every mistake in a C{[cache.NAME]} table is reported at its key.
    """

    def test_unknown_keys(self) -> None:
        """
        Unknown keys are errors; so is C{cache} or a cache that is not a
        table.
        """
        self.assertEqual(
            self.errors('[cache.c]\nsize = 1\ncolour = "red"\n' + FORWARD),
            ["p.toml: cache.c.size: unknown key", "p.toml: cache.c.colour: unknown key"],
        )
        self.assertEqual(
            self.errors("cache = 1\n" + FORWARD),
            ["p.toml: cache: must be a table, not an integer"],
        )
        self.assertEqual(
            self.errors("[cache]\nc = 1\n" + FORWARD),
            ["p.toml: cache.c: must be a table, not an integer"],
        )

    def test_bad_names(self) -> None:
        """
        A cache name must start with a letter, hold only letters, digits,
        C{-} and C{_}, and have at most 64 characters.
        """
        long = "a" * 65
        self.assertEqual(
            self.errors(f'[cache."1st"]\n[cache."a b"]\n[cache."é"]\n[cache.{long}]\n' + FORWARD),
            [
                "p.toml: cache.1st: cache name '1st' is not a simple name"
                " (a letter, then letters, digits, '-' and '_')",
                "p.toml: cache.a b: cache name 'a b' is not a simple name"
                " (a letter, then letters, digits, '-' and '_')",
                "p.toml: cache.é: cache name 'é' is not a simple name"
                " (a letter, then letters, digits, '-' and '_')",
                f"p.toml: cache.{long}: cache name '{long}' is longer than 64 characters",
            ],
        )

    def test_sizes(self) -> None:
        """
        C{max_size} is at least 1 MiB, C{memory} at least 0 and
        C{max_object_size} at least 1 byte; strings must be sizes.
        """
        self.assertEqual(
            self.errors(
                """
                [cache.a]
                max_size = "512KiB"
                memory = -1
                max_object_size = 0
                [cache.b]
                max_size = "10 GB!"
                memory = "lots"
                max_object_size = 1.5
                [cache.c]
                max_size = true
                memory = "-64MiB"
                max_object_size = "1.5B"
                """
                + FORWARD
            ),
            [
                "p.toml: cache.a.max_size: must be at least 1MiB, not '512KiB'",
                "p.toml: cache.a.memory: must not be negative, not -1",
                "p.toml: cache.a.max_object_size: must be at least 1 byte, not 0",
                f"p.toml: cache.b.max_size: '10 GB!' {NOT_A_SIZE}",
                f"p.toml: cache.b.memory: 'lots' {NOT_A_SIZE}",
                f"p.toml: cache.b.max_object_size: must be a size ({SIZE_FORMS}), not a float",
                f"p.toml: cache.c.max_size: must be a size ({SIZE_FORMS}), not a boolean",
                "p.toml: cache.c.memory: must not be negative, not '-64MiB'",
                f"p.toml: cache.c.max_object_size: '1.5B' {NOT_A_SIZE}",
            ],
        )

    def test_object_larger_than_cache(self) -> None:
        """
        C{max_object_size} may not exceed C{max_size} (given or default);
        a bad C{max_size} is reported alone.
        """
        self.assertEqual(
            self.errors(
                """
                [cache.a]
                max_size = "10MiB"
                max_object_size = "20MiB"
                [cache.b]
                max_object_size = "2GiB"
                [cache.c]
                max_size = "1KiB"
                max_object_size = "2GiB"
                """
                + FORWARD
            ),
            [
                "p.toml: cache.a.max_object_size: must not be larger than max_size (10MiB),"
                " not '20MiB'",
                "p.toml: cache.b.max_object_size: must not be larger than max_size (1GiB),"
                " not '2GiB'",
                "p.toml: cache.c.max_size: must be at least 1MiB, not '1KiB'",
            ],
        )

    def test_lock_timeout(self) -> None:
        """
        C{lock_timeout} is a positive number of seconds.
        """
        self.assertEqual(
            self.errors(
                '[cache.a]\nlock_timeout = 0\n[cache.b]\nlock_timeout = "5s"\n' + FORWARD
            ),
            [
                "p.toml: cache.a.lock_timeout: must be a number of seconds > 0, not 0",
                "p.toml: cache.b.lock_timeout: must be a number of seconds, not a string",
            ],
        )

    def test_domains(self) -> None:
        """
        Each bad domain pattern is reported at its index with the pattern's
        problem; a list must be an array of strings.
        """
        self.assertEqual(
            self.errors(
                """
                [cache.a]
                domains = ["ok.com", "a b.com", "x.y.*", "", 3]
                bypass_domains = ["example.com:443", "http://x.com"]
                [cache.b]
                domains = "example.com"
                """
                + FORWARD
            ),
            [
                "p.toml: cache.a.domains[1]: 'a b.com' must not contain spaces",
                "p.toml: cache.a.domains[2]: 'x.y.*': '.*' must follow exactly one label"
                " (like 'docs.*', which matches docs.python.org)",
                "p.toml: cache.a.domains[3]: must not be empty",
                "p.toml: cache.a.domains[4]: must be a string, not an integer",
                "p.toml: cache.a.bypass_domains[0]: 'example.com:443' must not include a port",
                "p.toml: cache.a.bypass_domains[1]: 'http://x.com' must be a host name,"
                " not a URL or a path",
                "p.toml: cache.b.domains: must be an array of strings, not a string",
            ],
        )

    def test_tag_header(self) -> None:
        """
        C{tag_header} is one header name.
        """
        self.assertEqual(
            self.errors(
                '[cache.a]\ntag_header = "Cache Tag"\n[cache.b]\ntag_header = ""\n'
                "[cache.c]\ntag_header = []\n" + FORWARD
            ),
            [
                "p.toml: cache.a.tag_header: 'Cache Tag' is not a valid header name",
                "p.toml: cache.b.tag_header: must not be empty",
                "p.toml: cache.c.tag_header: must be a string, not an array",
            ],
        )

    def test_path_is_a_file(self) -> None:
        """
        C{path} may not name a file, nor a folder under a file.
        """
        with open(self.at("afile"), "w"):
            pass
        self.assertEqual(
            self.errors(
                '[cache.a]\npath = "afile"\n[cache.b]\npath = "afile/b/c"\n' + FORWARD
            ),
            [
                f"p.toml: cache.a.path: 'afile': {self.at('afile')} is a file, not a folder",
                f"p.toml: cache.b.path: 'afile/b/c': cannot create {self.at('afile', 'b', 'c')}:"
                f" {self.at('afile')} is a file, not a folder",
            ],
        )

    def test_default_path_blocked(self) -> None:
        """
        The default folder C{cache/NAME} is checked too, and the message
        says it is the default.
        """
        with open(self.at("cache"), "w"):
            pass
        self.assertEqual(
            self.errors(EDGE + FORWARD),
            [
                f"p.toml: cache.edge.path: 'cache/edge' (the default): cannot create"
                f" {self.at('cache', 'edge')}: {self.at('cache')} is a file, not a folder",
            ],
        )

    def test_path_broken_link(self) -> None:
        """
        A broken symbolic link where the folder or a parent should be is
        reported.
        """
        os.symlink(self.at("nowhere"), self.at("link"))
        self.assertEqual(
            self.errors('[cache.a]\npath = "link"\n[cache.b]\npath = "link/b"\n' + FORWARD),
            [
                f"p.toml: cache.a.path: 'link': {self.at('link')} is a broken symbolic link",
                f"p.toml: cache.b.path: 'link/b': cannot create {self.at('link', 'b')}:"
                f" {self.at('link')} is a broken symbolic link",
            ],
        )

    def test_path_not_writable(self) -> None:
        """
        An existing folder must be writable, and the nearest existing
        parent of a missing one too (checked with C{os.access}).
        """
        os.makedirs(self.at("ro"))
        real_access = os.access

        def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
            if os.fspath(path) == self.at("ro") and mode & os.W_OK:
                return False
            return real_access(path, mode, *args, **kwargs)

        self.patch(os, "access", access)
        self.assertEqual(
            self.errors('[cache.a]\npath = "ro"\n[cache.b]\npath = "ro/new/b"\n' + FORWARD),
            [
                f"p.toml: cache.a.path: 'ro': folder {self.at('ro')} is not writable",
                f"p.toml: cache.b.path: 'ro/new/b': cannot create {self.at('ro', 'new', 'b')}:"
                f" folder {self.at('ro')} is not writable",
            ],
        )

    def test_path_not_a_string(self) -> None:
        """
        C{path} is a non-empty string.
        """
        self.assertEqual(
            self.errors('[cache.a]\npath = 1\n[cache.b]\npath = ""\n' + FORWARD),
            [
                "p.toml: cache.a.path: must be a string, not an integer",
                "p.toml: cache.b.path: must not be empty",
            ],
        )

    def test_overlapping_folders(self) -> None:
        """
        Two caches cannot share a folder or nest one in the other, and no
        cache may overlap the spool folder.
        """
        self.assertEqual(
            self.errors(
                """
                [cache.a]
                path = "c"
                [cache.b]
                path = "c/./"
                [cache.c]
                path = "c/inner"
                [cache.d]
                path = "spool/d"
                [cache.e]
                path = "."
                """
                + FORWARD
            ),
            [
                f"p.toml: cache.b.path: {self.at('c')} overlaps cache.a.path ({self.at('c')});"
                " each cache needs a folder of its own",
                f"p.toml: cache.c.path: {self.at('c', 'inner')} overlaps cache.a.path"
                f" ({self.at('c')}); each cache needs a folder of its own",
                f"p.toml: cache.e.path: {self.base} overlaps cache.a.path ({self.at('c')});"
                " each cache needs a folder of its own",
                f"p.toml: cache.d.path: {self.at('spool', 'd')} overlaps proxy.spool_path"
                f" ({self.at('spool')}); a cache needs a folder of its own",
            ],
        )


class SpoolTests(CacheConfigMixin, SynchronousTestCase):
    """
    C{[proxy] spool_path} and C{spool_max}.
    """

    def test_defaults(self) -> None:
        """
        Without the keys, the spool is the folder C{spool} next to the
        configuration file (not created by the check), bounded at 4 GiB.
        """
        for text in [FORWARD, "[proxy]\n" + FORWARD]:
            proxy = self.parse(text).proxy
            self.assertEqual(proxy.spool_path, self.at("spool"))
            self.assertEqual(proxy.spool_max, 4 * GiB)
        self.assertFalse(os.path.exists(self.at("spool")))

    def test_embedded_default(self) -> None:
        """
        The embedded default configuration (no file) spools under the
        working folder; so does a L{ProxySettings} built without the key.
        """
        self.assertEqual(default_config().proxy.spool_path, os.path.abspath("spool"))
        self.assertEqual(default_config().proxy.spool_max, 4 * GiB)
        self.assertEqual(ProxySettings().spool_path, os.path.abspath("spool"))

    def test_values(self) -> None:
        """
        A relative C{spool_path} is resolved against the file's folder; an
        existing folder is fine; C{spool_max} is a size, 0 allowed.
        """
        os.makedirs(self.at("var", "spool"))
        proxy = self.parse(
            '[proxy]\nspool_path = "var/spool"\nspool_max = "512 MB"\n' + FORWARD
        ).proxy
        self.assertEqual(proxy.spool_path, self.at("var", "spool"))
        self.assertEqual(proxy.spool_max, 512 * 10**6)
        proxy = self.parse("[proxy]\nspool_max = 0\n" + FORWARD).proxy
        self.assertEqual(proxy.spool_max, 0)
        proxy = self.parse('[proxy]\nspool_path = "new/spool"\n' + FORWARD).proxy
        self.assertEqual(proxy.spool_path, self.at("new", "spool"))

    def test_errors(self) -> None:
        """
        C{spool_path} follows the folder rules of a cache path;
        C{spool_max} is a size.
        """
        with open(self.at("afile"), "w"):
            pass
        self.assertEqual(
            self.errors('[proxy]\nspool_path = "afile"\nspool_max = "4 GiBs"\n' + FORWARD),
            [
                f"p.toml: proxy.spool_path: 'afile': {self.at('afile')} is a file, not a folder",
                f"p.toml: proxy.spool_max: '4 GiBs' {NOT_A_SIZE}",
            ],
        )
        self.assertEqual(
            self.errors("[proxy]\nspool_path = false\nspool_max = -1\n" + FORWARD),
            [
                "p.toml: proxy.spool_path: must be a string, not a boolean",
                "p.toml: proxy.spool_max: must not be negative, not -1",
            ],
        )

    def test_default_blocked(self) -> None:
        """
        A file named C{spool} next to the configuration makes the default
        unusable, with or without a C{[proxy]} table.
        """
        with open(self.at("spool"), "w"):
            pass
        line = (
            f"p.toml: proxy.spool_path: 'spool' (the default): {self.at('spool')}"
            " is a file, not a folder"
        )
        self.assertEqual(self.errors(FORWARD), [line])
        self.assertEqual(self.errors("[proxy]\nidle_timeout = 5\n" + FORWARD), [line])


class ListenerCacheTests(CacheConfigMixin, SynchronousTestCase):
    """
    C{cache = "NAME"} on forward and reverse listeners and on routes.
    """

    def test_listeners(self) -> None:
        """
        Forward and reverse listeners name a cache defined anywhere in the
        file; routes inherit it unless they name another or C{false}.
        """
        config = self.parse(
            'cache = "edge"\n'.join([FORWARD, REVERSE])
            + 'cache = "edge"\n'
            + ROUTE
            + '  path = "/a/"\n  cache = "other"\n'
            + ROUTE
            + '  path = "/b/"\n  cache = false\n'
            + ROUTE
            + WEB
            + EDGE
            + "[cache.other]\n"
        )
        forward, reverse = config.listeners
        self.assertEqual(forward.cache, "edge")
        self.assertEqual(reverse.cache, "edge")
        a, b, root = reverse.routes
        self.assertEqual((a.cache, b.cache, root.cache), ("other", False, None))
        self.assertEqual(
            [r.cache_for(reverse) for r in reverse.routes], ["other", None, "edge"]
        )
        self.assertEqual(set(config.caches), {"edge", "other"})

    def test_route_without_listener_cache(self) -> None:
        """
        A route may name a cache on a listener that has none.
        """
        config = self.parse(REVERSE + ROUTE + '  cache = "edge"\n' + WEB + EDGE)
        listener = config.listeners[0]
        self.assertIsNone(listener.cache)
        self.assertEqual(listener.routes[0].cache_for(listener), "edge")

    def test_unknown_cache(self) -> None:
        """
        Naming a cache that does not exist is an error on the listener and
        on the route.
        """
        self.assertEqual(
            self.errors(
                FORWARD + 'cache = "edge"\n' + REVERSE + 'cache = "nope"\n' + ROUTE
                + '  cache = "missing"\n' + WEB + EDGE
            ),
            [
                "p.toml: listener[1].cache: unknown cache 'nope'",
                "p.toml: listener[1].route[0].cache: unknown cache 'missing'",
            ],
        )

    def test_unknown_cache_without_caches(self) -> None:
        """
        With no C{[cache.*]} at all, any cache name is unknown.
        """
        self.assertEqual(
            self.errors(FORWARD + 'cache = "edge"\n'),
            ["p.toml: listener[0].cache: unknown cache 'edge'"],
        )

    def test_bad_values(self) -> None:
        """
        A listener's C{cache} is a name; a route's a name or C{false}, and
        C{true} asks for a name.
        """
        self.assertEqual(
            self.errors(
                FORWARD + "cache = false\n" + REVERSE + 'cache = ""\n'
                + ROUTE + "  cache = true\n"
                + ROUTE + '  path = "/a/"\n  cache = 1\n'
                + WEB + EDGE
            ),
            [
                "p.toml: listener[0].cache: must be a cache name (a string), not a boolean",
                "p.toml: listener[1].cache: must not be empty",
                "p.toml: listener[1].route[0].cache: true is not allowed: name a cache"
                ' (cache = "NAME"), or write false for no cache; leave the key out to use'
                " the listener's",
                "p.toml: listener[1].route[1].cache: must be a cache name or false"
                " (a string), not an integer",
            ],
        )

    def test_tcp_listener(self) -> None:
        """
        A tcp listener relays bytes: C{cache} and the buffer keys are
        errors on it.
        """
        self.assertEqual(
            self.errors(
                TCP
                + 'cache = "edge"\nresponse_buffer = 0\nrequest_buffer = "1MiB"\n'
                + DB
                + EDGE
            ),
            [
                "p.toml: listener[0].cache: not on a tcp listener"
                " (only forward and reverse listeners use a cache)",
                "p.toml: listener[0].response_buffer: not on a tcp listener"
                " (only forward and reverse listeners buffer HTTP bodies)",
                "p.toml: listener[0].request_buffer: not on a tcp listener"
                " (only forward and reverse listeners buffer HTTP bodies)",
            ],
        )

    def test_custom_listener(self) -> None:
        """
        A custom listener's table goes to its factory unchecked, C{cache}
        included.
        """
        config = self.parse(
            """
            [[listener]]
            name = "echo"
            kind = "custom"
            endpoint = "tcp:7007:interface=127.0.0.1"
            factory = "twisted_proxy.examples.echo:EchoFactory"
            cache = "anything"
            """
        )
        self.assertEqual(config.listeners[0].options, {"cache": "anything"})
        self.assertIsNone(config.listeners[0].cache)

    def test_redirecting_listener(self) -> None:
        """
        On a listener with C{redirect_to_https}, C{cache} and the buffers
        would do nothing: errors.
        """
        self.assertEqual(
            self.errors(
                FORWARD
                + 'redirect_to_https = true\ncache = "edge"\nresponse_buffer = 1\n'
                + "request_buffer = 1\n"
                + EDGE
            ),
            [
                "p.toml: listener[0].cache: not used on a listener with redirect_to_https"
                " (every request is redirected)",
                "p.toml: listener[0].response_buffer: not used on a listener with"
                " redirect_to_https (every request is redirected)",
                "p.toml: listener[0].request_buffer: not used on a listener with"
                " redirect_to_https (every request is redirected)",
            ],
        )

    def test_bad_cache_table_is_not_unknown(self) -> None:
        """
        A listener naming a cache whose table has problems gets no second
        error: the table's own errors say what is wrong.
        """
        self.assertEqual(
            self.errors('[cache.edge]\nmax_size = 1\n' + FORWARD + 'cache = "edge"\n'),
            ["p.toml: cache.edge.max_size: must be at least 1MiB, not 1"],
        )


class BufferTests(CacheConfigMixin, SynchronousTestCase):
    """
    C{response_buffer} and C{request_buffer} on listeners and routes.
    """

    def test_defaults(self) -> None:
        """
        Unset, a reverse listener holds up to 1 GiB of a response and
        1 MiB of a request body; a forward listener holds none; a route
        takes its listener's.
        """
        config = self.parse(FORWARD + REVERSE + ROUTE + WEB)
        forward, reverse = config.listeners
        self.assertEqual((forward.response_buffer, forward.request_buffer), (None, None))
        self.assertEqual((reverse.response_buffer, reverse.request_buffer), (None, None))
        self.assertEqual(forward.buffers(), (0, 0))
        self.assertEqual(reverse.buffers(), (GiB, MiB))
        route = reverse.routes[0]
        self.assertEqual((route.response_buffer, route.request_buffer), (None, None))
        self.assertEqual(route.buffers_for(reverse), (GiB, MiB))

    def test_other_kinds(self) -> None:
        """
        tcp and custom listeners buffer nothing.
        """
        for kind in ("tcp", "custom"):
            listener = ListenerConfig(name="x", kind=kind, endpoint="tcp:0")
            self.assertEqual(listener.buffers(), (0, 0))

    def test_values(self) -> None:
        """
        Both keys are sizes (0 allowed) on forward and reverse listeners and
        on routes; a route's value wins over its listener's, one key at a
        time.
        """
        config = self.parse(
            FORWARD
            + 'response_buffer = "8MiB"\nrequest_buffer = 65536\n'
            + REVERSE
            + "response_buffer = 0\n"
            + ROUTE
            + '  path = "/up/"\n  request_buffer = "100 MB"\n'
            + ROUTE
            + '  path = "/dl/"\n  response_buffer = "2GiB"\n  request_buffer = 0\n'
            + ROUTE
            + WEB
        )
        forward, reverse = config.listeners
        self.assertEqual((forward.response_buffer, forward.request_buffer), (8 * MiB, 65536))
        self.assertEqual(forward.buffers(), (8 * MiB, 65536))
        self.assertEqual(reverse.response_buffer, 0)
        self.assertEqual(reverse.buffers(), (0, MiB))
        up, dl, root = reverse.routes
        self.assertEqual((up.response_buffer, up.request_buffer), (None, 100 * 10**6))
        self.assertEqual(up.buffers_for(reverse), (0, 100 * 10**6))
        self.assertEqual(dl.buffers_for(reverse), (2 * GiB, 0))
        self.assertEqual(root.buffers_for(reverse), (0, MiB))
        self.assertEqual(
            RouteConfig(backend="web", request_buffer=5).buffers_for(forward), (8 * MiB, 5)
        )

    def test_errors(self) -> None:
        """
        Each bad buffer value is reported at its key.
        """
        self.assertEqual(
            self.errors(
                FORWARD
                + 'response_buffer = "1 XiB"\nrequest_buffer = -5\n'
                + REVERSE
                + "response_buffer = 1.5\n"
                + ROUTE
                + '  request_buffer = "-1MiB"\n  response_buffer = "big"\n'
                + WEB
            ),
            [
                f"p.toml: listener[0].response_buffer: '1 XiB' {NOT_A_SIZE}",
                "p.toml: listener[0].request_buffer: must not be negative, not -5",
                f"p.toml: listener[1].response_buffer: must be a size ({SIZE_FORMS}),"
                " not a float",
                "p.toml: listener[1].route[0].request_buffer: must not be negative,"
                " not '-1MiB'",
                f"p.toml: listener[1].route[0].response_buffer: 'big' {NOT_A_SIZE}",
            ],
        )


class FirstLabelDomainsTests(CacheConfigMixin, SynchronousTestCase):
    """
    The C{"docs.*"} domain pattern where the configuration takes domain
    patterns.
    """

    def test_parents(self) -> None:
        """
        A forward listener's parents may use it; bad forms are reported.
        """
        config = self.parse(
            FORWARD
            + 'parents = [{ domains = ["Docs.*", "a.example"], proxy = "http://127.0.0.1:1" }]\n'
        )
        self.assertEqual(config.listeners[0].parents[0].domains, ("docs.*", "a.example"))
        self.assertEqual(
            self.errors(
                FORWARD
                + 'parents = [{ domains = ["a.b.*", "*.x.*"], proxy = "http://127.0.0.1:1" }]\n'
            ),
            [
                "p.toml: listener[0].parents[0].domains[0]: 'a.b.*': '.*' must follow exactly"
                " one label (like 'docs.*', which matches docs.python.org)",
                "p.toml: listener[0].parents[0].domains[1]: '*.x.*': '*.' and '.*' cannot"
                " be combined",
            ],
        )

    def test_acl(self) -> None:
        """
        An acl filter's domain lists take it.
        """
        config = self.parse(
            '[filter.f]\ntype = "acl"\nblock_domains = ["docs.*"]\nhosts = ["wiki.*"]\n' + FORWARD
        )
        self.assertEqual(config.filters["f"].spec.block_domains, ("docs.*",))

    def test_route_host_refused(self) -> None:
        """
        A route's host is exact or C{*.example.com}: C{docs.*} is refused
        with a message saying where it belongs.
        """
        self.assertEqual(
            self.errors(REVERSE + ROUTE + '  host = "docs.*"\n' + WEB),
            [
                "p.toml: listener[0].route[0].host: 'docs.*': a route's host is exact or"
                " '*.example.com'; a first-label pattern like 'docs.*' is for domain"
                " lists only",
            ],
        )

    def test_server_host_refused(self) -> None:
        """
        A backend server's host cannot be a pattern of either kind.
        """
        self.assertEqual(
            self.errors(
                REVERSE + ROUTE + '[backend.web]\nservers = [{ url = "http://docs.*:80" }]\n'
            ),
            [
                "p.toml: backend.web.servers[0].url: server URL 'http://docs.*:80':"
                " 'docs.*': a server's host cannot be a wildcard",
            ],
        )


class FolderProblemTests(SynchronousTestCase):
    """
    L{folder_problem} on its own.
    """

    def test_root_children(self) -> None:
        """
        A missing folder whose parents are missing up to an existing folder
        is creatable.
        """
        base = tempfile.mkdtemp(prefix="twisted-proxy-test-")
        self.addCleanup(shutil.rmtree, base, True)
        self.assertIsNone(folder_problem(os.path.join(base, "a", "b", "c")))
        self.assertIsNone(folder_problem(base))
