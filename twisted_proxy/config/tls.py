# -*- test-case-name: tests.test_config -*-
"""
TLS in the configuration: a forward or reverse listener's C{tls} table
(certificates chosen by SNI, minimum version, ciphers, client
certificates) and the TLS keys of an C{https://} server entry (C{ca},
C{server_name}, C{verify}, C{client_cert}, C{client_key}).

Every certificate, key and CA file is loaded here exactly as the listener or
the connection pool will load it, so that C{--check} catches a bad file.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, Mapping, Optional, Tuple

from twisted_proxy.config.checks import TOKEN, Checks, type_name
from twisted_proxy.domains import validate_domain_pattern
from twisted_proxy.model import CertificateConfig, TLSConfig

__all__ = ["SERVER_TLS_KEYS", "TLSChecks"]

#: The keys of a server entry that only C{https://} servers take.
SERVER_TLS_KEYS: Tuple[str, ...] = ("ca", "server_name", "verify", "client_cert", "client_key")


class TLSChecks(Checks):
    """
    A listener's C{tls} table and a server entry's TLS keys.
    """

    def listener_tls(self, value: Any, key: str) -> Optional[TLSConfig]:
        """
        A listener's C{tls} table; every file is loaded as the listener
        will load it.
        """
        from twisted_proxy import tls as tlsmod

        table = self.table(value, key)
        if table is None:
            return None
        before = len(self.errors)
        values: Dict[str, Any] = {}
        for name, item in table.items():
            item_key = f"{key}.{name}"
            if name == "certificates":
                values[name] = self.certificates(item, item_key)
            elif name == "min_version":
                if isinstance(item, float):
                    self.errors.add(
                        item_key, "must be a string (\"1.2\" or \"1.3\"), not a float"
                    )
                    continue
                version = self.string(item, item_key)
                if version is not None and version not in tlsmod.MIN_VERSIONS:
                    self.errors.add(
                        item_key, f"unknown TLS version {version!r} (expected \"1.2\" or \"1.3\")"
                    )
                values[name] = version
            elif name == "ciphers":
                ciphers = self.string(item, item_key)
                if ciphers is not None:
                    try:
                        tlsmod.check_ciphers(ciphers)
                    except tlsmod.TLSFileError as e:
                        self.errors.add(item_key, e.message)
                values[name] = ciphers
            elif name == "client_ca":
                path = self.file_path(item, item_key)
                if path is not None:
                    try:
                        tlsmod.load_ca_file(path)
                    except tlsmod.TLSFileError as e:
                        self.errors.add(item_key, e.message)
                values[name] = path
            elif name == "verify_client":
                mode = self.string(item, item_key)
                if mode is not None and mode not in tlsmod.VERIFY_CLIENT:
                    self.errors.add(
                        item_key,
                        f"unknown verify_client {mode!r} (expected \"required\" or \"optional\")",
                    )
                values[name] = mode
            elif name == "client_subject_header":
                header = self.string(item, item_key)
                if header is not None and not TOKEN.match(header):
                    self.errors.add(item_key, f"{header!r} is not a valid header name")
                values[name] = header
            else:
                self.errors.add(item_key, "unknown key")
        if "certificates" not in table:
            self.errors.add(f"{key}.certificates", "required key is missing")
        if "client_ca" not in table:
            for name in ("verify_client", "client_subject_header"):
                if name in table:
                    self.errors.add(
                        f"{key}.{name}",
                        "needs client_ca (the CA file client certificates are verified against)",
                    )
        elif "verify_client" not in table:
            values["verify_client"] = "required"
        if len(self.errors) > before:
            return None
        config = TLSConfig(**values)
        try:
            # the contexts exactly as the listener makes them
            tlsmod.ServerTLS(config)
        except tlsmod.TLSFileError as e:
            self.errors.add(f"{key}.{e.where}", e.message)
            return None
        return config

    def certificates(self, value: Any, key: str) -> Tuple[CertificateConfig, ...]:
        from twisted_proxy import tls as tlsmod

        if not isinstance(value, list):
            self.errors.add(
                key,
                f"must be an array of tables ({{ cert = ..., key = ... }}), not {type_name(value)}",
            )
            return ()
        if not value:
            self.errors.add(key, "must not be empty (the first certificate is the default)")
        out = []
        for i, item in enumerate(value):
            item_key = f"{key}[{i}]"
            table = self.table(item, item_key)
            if table is None:
                continue
            paths: Dict[str, Optional[str]] = {}
            for name, path in table.items():
                if name in ("cert", "key"):
                    paths[name] = self.file_path(path, f"{item_key}.{name}")
                else:
                    self.errors.add(f"{item_key}.{name}", "unknown key")
            for name in ("cert", "key"):
                if name not in table:
                    self.errors.add(f"{item_key}.{name}", "required key is missing")
            cert, private_key = paths.get("cert"), paths.get("key")
            if cert is None or private_key is None:
                continue
            try:
                tlsmod.load_certificate_pair(cert, private_key)
            except tlsmod.TLSFileError as e:
                self.errors.add(f"{item_key}.{e.field}", e.message)
                continue
            out.append(CertificateConfig(cert=cert, key=private_key))
        return tuple(out)

    def server_tls(
        self, scheme: str, tls_values: Mapping[str, Tuple[Any, str]]
    ) -> Dict[str, Any]:
        """
        The TLS keys of a server entry (C{ca}, C{server_name}, C{verify},
        C{client_cert}, C{client_key}): only for https:// servers.
        """
        from twisted_proxy import tls as tlsmod

        out: Dict[str, Any] = {}
        if scheme != "https":
            for name, (_, item_key) in tls_values.items():
                self.errors.add(item_key, f"only for https:// servers (this one is {scheme}://)")
            return out
        for name, (item, item_key) in tls_values.items():
            if name == "verify":
                out[name] = self.boolean(item, item_key)
            elif name == "server_name":
                text = self.string(item, item_key)
                if text is None:
                    continue
                name_text = text.strip().lower().rstrip(".")
                problem = None
                try:
                    ipaddress.ip_address(name_text)
                except ValueError:
                    problem = validate_domain_pattern(name_text)
                    if problem is None and "*" in name_text:
                        problem = f"{text!r}: a server name cannot be a wildcard"
                if problem is not None:
                    self.errors.add(item_key, problem)
                else:
                    out[name] = name_text
            else:
                path = self.file_path(item, item_key)
                if path is None:
                    continue
                if name == "ca":
                    try:
                        tlsmod.load_ca_file(path, "ca")
                    except tlsmod.TLSFileError as e:
                        self.errors.add(item_key, e.message)
                        continue
                out[name] = path
        key_of = {name: item_key for name, (_, item_key) in tls_values.items()}
        for one, other in (("client_cert", "client_key"), ("client_key", "client_cert")):
            if one in tls_values and other not in tls_values:
                stem = key_of[one].rsplit(".", 1)[0]
                self.errors.add(f"{stem}.{other}", f"required with {one}")
        if out.get("client_cert") and out.get("client_key"):
            try:
                tlsmod.load_certificate_pair(out["client_cert"], out["client_key"])
            except tlsmod.TLSFileError as e:
                self.errors.add(key_of["client_" + e.field], e.message)
        if "ca" in out and tls_values.get("verify", (True,))[0] is False:
            self.errors.add(key_of["ca"], "has no effect with verify = false")
        return out
