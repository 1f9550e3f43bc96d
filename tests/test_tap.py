"""
Tests for L{twisted_proxy.tap}: C{twistd proxy} options, C{--check}, and
service construction; and for the plugin that names it.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import types
from typing import Any, List, Tuple

from twisted.application.service import IServiceMaker, Service
from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy import tap
from twisted_proxy.config import default_config
from twisted_proxy.model import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VALID = """
[[listener]]
name = "out"
kind = "forward"
endpoint = "tcp:3128:interface=127.0.0.1"
"""

INVALID = """
[proxy]
connect_timeout = 0

[[listener]]
name = "out"
kind = "forward"
endpoint = "tcp:nope"
"""


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def temp_path(self, name: str) -> str:
        """
        A path in a new folder removed after the test.
        """
        d = tempfile.mkdtemp(prefix="twisted-proxy-test-")
        self.addCleanup(shutil.rmtree, d, True)
        return os.path.join(d, name)

    def write(self, text: str) -> str:
        path = self.temp_path("proxy.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_options(self, args: List[str]) -> Tuple[Any, tap.Options]:
        """
        Parse C{args}; the exit code if the options exit, else L{None}.
        """
        options = tap.Options()
        try:
            options.parseOptions(args)
        except SystemExit as e:
            return e.code, options
        return None, options

    def test_check_ok(self) -> None:
        """
        C{--check} with a valid file prints C{FILE: ok} on stdout and exits 0.
        """
        path = self.write(VALID)
        code, _ = self.run_options(["--check", "--config", path])
        self.assertEqual(code, 0)
        self.assertEqual(self.stdout.getvalue(), f"{path}: ok\n")
        self.assertEqual(self.stderr.getvalue(), "")

    def test_check_errors(self) -> None:
        """
        C{--check} with an invalid file prints one C{FILE: key.path: message}
        line per problem on stderr and exits 1.
        """
        path = self.write(INVALID)
        code, _ = self.run_options(["--check", "-c", path])
        self.assertEqual(code, 1)
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertEqual(
            lines[0], f"{path}: proxy.connect_timeout: must be a number of seconds > 0, not 0"
        )
        self.assertTrue(lines[1].startswith(f"{path}: listener[0].endpoint: "), lines[1])
        self.assertEqual(self.stdout.getvalue(), "")

    def test_missing_file(self) -> None:
        """
        A configuration file that cannot be read is one line and exit 1,
        with or without C{--check}.
        """
        path = self.temp_path("missing.toml")
        for args in (["--check", "--config", path], ["--config", path]):
            self.stderr.truncate(0)
            self.stderr.seek(0)
            code, _ = self.run_options(args)
            self.assertEqual(code, 1)
            self.assertEqual(
                self.stderr.getvalue(), f"{path}: file: No such file or directory\n"
            )

    def test_invalid_without_check(self) -> None:
        """
        Without C{--check}, an invalid file still exits 1 with its error
        lines, before any service is made.
        """
        path = self.write(INVALID)
        code, _ = self.run_options(["--config", path])
        self.assertEqual(code, 1)
        self.assertEqual(len(self.stderr.getvalue().splitlines()), 2)

    def test_valid_stores_config(self) -> None:
        """
        Without C{--check}, a valid file does not exit and its L{Config} is
        stored under C{config_obj}.
        """
        path = self.write(VALID)
        code, options = self.run_options(["--config", path])
        self.assertIsNone(code)
        config = options["config_obj"]
        self.assertIsInstance(config, Config)
        self.assertEqual(config.listeners[0].name, "out")
        self.assertEqual(self.stdout.getvalue(), "")

    def test_default(self) -> None:
        """
        Without C{--config} the embedded default configuration is used.
        """
        code, options = self.run_options([])
        self.assertIsNone(code)
        self.assertEqual(options["config_obj"], default_config())

    def test_check_default(self) -> None:
        """
        C{--check} alone validates the embedded default and exits 0.
        """
        code, _ = self.run_options(["--check"])
        self.assertEqual(code, 0)
        self.assertEqual(self.stdout.getvalue(), "<default>: ok\n")


class MakeServiceTests(SynchronousTestCase):
    def test_make_service(self) -> None:
        """
        L{tap.makeService} hands the stored L{Config} and the global reactor
        to L{twisted_proxy.service.make_service}.
        """
        calls = []
        service = Service()

        def make_service(config: Config, reactor: Any) -> Service:
            calls.append((config, reactor))
            return service

        fake = types.ModuleType("twisted_proxy.service")
        fake.make_service = make_service  # type: ignore[attr-defined]
        missing = object()
        saved = sys.modules.get("twisted_proxy.service", missing)
        sys.modules["twisted_proxy.service"] = fake

        def restore() -> None:
            if saved is missing:
                del sys.modules["twisted_proxy.service"]
            else:
                sys.modules["twisted_proxy.service"] = saved  # type: ignore[assignment]

        self.addCleanup(restore)
        from twisted_proxy import poll

        installed: list = []
        self.patch(poll, "install", installed.append)

        options = tap.Options()
        options.parseOptions([])
        self.assertIs(tap.makeService(options), service)

        from twisted.internet import reactor

        self.assertEqual(calls, [(options["config_obj"], reactor)])
        # and the reactor's loop runs without a logging context per event
        self.assertEqual(installed, [reactor])


class PluginTests(SynchronousTestCase):
    def test_service_maker(self) -> None:
        """
        The plugin file declares one service maker, C{proxy}, naming the tap
        module by string.
        """
        path = os.path.join(ROOT, "twisted", "plugins", "twisted_proxy_plugin.py")
        spec = importlib.util.spec_from_file_location("_twisted_proxy_plugin_under_test", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        makers = [v for v in vars(module).values() if IServiceMaker.providedBy(v)]
        self.assertEqual(len(makers), 1)
        [maker] = makers
        self.assertEqual(maker.tapname, "proxy")
        self.assertEqual(maker.module, "twisted_proxy.tap")
        self.assertIs(maker.options, tap.Options)

    def test_no_init_under_twisted(self) -> None:
        """
        There is no C{__init__.py} under C{twisted/}: it would shadow
        Twisted itself.
        """
        for folder in ("twisted", os.path.join("twisted", "plugins")):
            self.assertFalse(os.path.exists(os.path.join(ROOT, folder, "__init__.py")))

    def test_import_does_not_install_reactor(self) -> None:
        """
        Importing the tap module (as twistd does while scanning plugins) does
        not install a reactor.
        """
        code = (
            "import sys, twisted_proxy.tap; "
            "print('twisted.internet.reactor' in sys.modules)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "False")
