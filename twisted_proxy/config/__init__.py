# -*- test-case-name: tests.test_config -*-
"""
TOML configuration file to frozen L{twisted_proxy.model} objects.

Every problem is collected (never only the first) as a C{(key_path,
message)} pair, where C{key_path} is the TOML path of the offending value
(C{listener[1].endpoint}, C{proxy.connect_timeout},
C{filter.office-hours.during}); L{ConfigError.lines} renders them as
C{"FILE: key.path: message"}, the format of C{twistd proxy --check}.

Cross-references are checked too: a listener or route may only name a
C{[filter.NAME]}, C{[backend.NAME]} or C{[cache.NAME]} that exists
(anywhere in the file), reverse routes need a backend of
C{http://}/C{https://} servers and tcp listeners one of C{tcp://} servers.

No configuration mistake ever surfaces as a traceback.

This package is cut by section of the file: L{checks} (the value checks
they share), L{proxy} (C{[proxy]}, C{[admin]}), L{listeners} (listeners,
routes, parents), L{backends} (backends, servers, health), L{filters}
(C{[filter.NAME]}), L{caches} (C{[cache.NAME]}), L{tls} (listener C{tls}
tables, server TLS keys) and L{endpoints} (endpoint strings); L{document}
walks the top level.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any, List, Mapping, Sequence, Tuple, Union

from twisted_proxy.config.document import DocumentChecks
from twisted_proxy.filters import ErrorList
from twisted_proxy.model import Config, ListenerConfig, ProxySettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


__all__ = [
    "ConfigError",
    "DEFAULT_PATH",
    "default_config",
    "load_config",
    "parse_config",
]

#: The C{path} of the embedded default configuration.
DEFAULT_PATH = "<default>"


class ConfigError(Exception):
    """
    A configuration file has one or more problems.

    @ivar errors: C{(key_path, message)} pairs, in the order found.
    @ivar path: the configuration file's name as the user gave it.
    """

    def __init__(self, errors: Sequence[Tuple[str, str]], path: str) -> None:
        self.errors: List[Tuple[str, str]] = list(errors)
        self.path = path
        super().__init__("\n".join(self.lines()))

    def lines(self) -> List[str]:
        """
        One C{"FILE: key.path: message"} line per problem (C{"FILE:
        message"} when a problem concerns the whole file).
        """
        out = []
        for key, message in self.errors:
            if key:
                out.append(f"{self.path}: {key}: {message}")
            else:
                out.append(f"{self.path}: {message}")
        return out


def default_config() -> Config:
    """
    The embedded configuration used when no C{--config} is given: a forward
    proxy named C{"default"} on 127.0.0.1:3128 serving loopback clients only,
    access log on stdout, spool folder C{spool} in the working folder.
    """
    return Config(
        path=DEFAULT_PATH,
        proxy=ProxySettings(access_log="-", spool_path=os.path.abspath("spool")),
        admin=None,
        listeners=(
            ListenerConfig(
                name="default",
                kind="forward",
                endpoint="tcp:3128:interface=127.0.0.1",
                allow_clients=tuple(
                    ipaddress.ip_network(c) for c in ("127.0.0.0/8", "::1/128")
                ),
            ),
        ),
        filters={},
    )


def load_config(path: str) -> Config:
    """
    Read and validate the TOML configuration file at C{path}.

    Relative file names inside it are resolved against its directory.

    @raise ConfigError: listing every problem found.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([("file", e.strerror or str(e))], path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([("file", f"not UTF-8 text: {e}")], path) from None
    return parse_config(text, path, os.path.dirname(os.path.abspath(path)))


def parse_config(
    text_or_dict: Union[str, Mapping[str, Any]], path: str, base_dir: str
) -> Config:
    """
    Validate a configuration given as TOML text or as an already parsed
    mapping.

    @param path: the file name used in error lines and stored in the
        L{Config}.
    @param base_dir: the directory relative file names are resolved against.

    @raise ConfigError: listing every problem found.
    """
    if isinstance(text_or_dict, str):
        try:
            doc: Mapping[str, Any] = tomllib.loads(text_or_dict)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([("toml", str(e))], path) from None
    else:
        doc = text_or_dict
    errors = ErrorList()
    config = DocumentChecks(errors, base_dir).parse(doc, path)
    if errors:
        raise ConfigError(errors.items, path)
    assert config is not None
    return config
