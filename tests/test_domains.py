"""
Tests for L{twisted_proxy.domains}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_proxy.domains import (
    DomainSet,
    normalize_domain_pattern,
    validate_domain_pattern,
)


class DomainSetTests(SynchronousTestCase):
    """
    L{DomainSet.matches} answers which pattern a host falls under.
    """

    def test_plain_pattern_matches_apex_and_subdomains(self) -> None:
        """
        C{"example.com"} matches example.com itself and its subdomains at
        any depth.
        """
        domains = DomainSet(["example.com"])
        self.assertEqual(domains.matches("example.com"), "example.com")
        self.assertEqual(domains.matches("www.example.com"), "example.com")
        self.assertEqual(domains.matches("a.b.c.example.com"), "example.com")

    def test_plain_pattern_is_label_aligned(self) -> None:
        """
        A pattern matches whole labels only: look-alike names that merely
        end with the same characters, or contain the domain elsewhere, do
        not match.
        """
        domains = DomainSet(["example.com"])
        self.assertIsNone(domains.matches("notexample.com"))
        self.assertIsNone(domains.matches("example.com.evil.org"))
        self.assertIsNone(domains.matches("example.co"))
        self.assertIsNone(domains.matches("com"))

    def test_wildcard_matches_subdomains_not_apex(self) -> None:
        """
        C{"*.example.com"} matches subdomains at any depth but not
        example.com itself.
        """
        domains = DomainSet(["*.example.com"])
        self.assertIsNone(domains.matches("example.com"))
        self.assertEqual(domains.matches("www.example.com"), "*.example.com")
        self.assertEqual(domains.matches("a.b.example.com"), "*.example.com")
        self.assertIsNone(domains.matches("wwwexample.com"))

    def test_case_insensitive(self) -> None:
        """
        Hosts and patterns are compared without regard to case; the
        pattern is returned as it was given.
        """
        domains = DomainSet(["Example.COM"])
        self.assertEqual(domains.matches("WWW.example.Com"), "Example.COM")

    def test_trailing_dot_ignored(self) -> None:
        """
        A trailing dot (fully qualified form) on the host or the pattern
        makes no difference.
        """
        self.assertEqual(DomainSet(["example.com."]).matches("example.com"), "example.com.")
        self.assertEqual(DomainSet(["example.com"]).matches("www.example.com."), "example.com")
        self.assertEqual(DomainSet(["*.example.com"]).matches("a.example.com."), "*.example.com")

    def test_most_specific_pattern_wins(self) -> None:
        """
        When several patterns match, the one for the longest suffix of the
        host is returned, whatever the order they were given in.
        """
        domains = DomainSet(["example.com", "*.api.example.com"])
        self.assertEqual(domains.matches("v1.api.example.com"), "*.api.example.com")
        self.assertEqual(domains.matches("api.example.com"), "example.com")
        self.assertEqual(domains.matches("web.example.com"), "example.com")

    def test_plain_and_wildcard_for_same_domain(self) -> None:
        """
        With both C{"x"} and C{"*.x"}, the apex answers with C{"x"} and a
        subdomain with whichever was given first.
        """
        domains = DomainSet(["*.example.com", "example.com"])
        self.assertEqual(domains.matches("example.com"), "example.com")
        self.assertEqual(domains.matches("a.example.com"), "*.example.com")
        domains = DomainSet(["example.com", "*.example.com"])
        self.assertEqual(domains.matches("a.example.com"), "example.com")

    def test_duplicates_first_wins(self) -> None:
        """
        The same pattern given twice (in any spelling) answers with the
        first spelling.
        """
        domains = DomainSet(["example.com", "EXAMPLE.com."])
        self.assertEqual(domains.matches("example.com"), "example.com")

    def test_ipv4_literal_matches_only_exactly(self) -> None:
        """
        An IPv4 pattern matches that address only; a domain whose labels
        contain it does not match, and a domain pattern never matches an
        IP literal host.
        """
        domains = DomainSet(["192.0.2.1", "example.com"])
        self.assertEqual(domains.matches("192.0.2.1"), "192.0.2.1")
        self.assertIsNone(domains.matches("192.0.2.10"))
        self.assertIsNone(domains.matches("10.192.0.2.1"))
        self.assertIsNone(domains.matches("192.0.2.1.nip.io"))
        self.assertEqual(DomainSet(["nip.io"]).matches("192.0.2.1.nip.io"), "nip.io")

    def test_ipv6_literal_any_spelling(self) -> None:
        """
        An IPv6 pattern matches the same address in any spelling: long or
        compressed form, upper case, with or without brackets.
        """
        domains = DomainSet(["2001:db8::1"])
        self.assertEqual(domains.matches("2001:db8::1"), "2001:db8::1")
        self.assertEqual(domains.matches("[2001:DB8:0:0:0:0:0:1]"), "2001:db8::1")
        self.assertIsNone(domains.matches("2001:db8::2"))
        self.assertEqual(DomainSet(["[::1]"]).matches("::1"), "[::1]")

    def test_ip_host_without_ip_patterns(self) -> None:
        """
        An IP literal host matches nothing in a set of domain patterns.
        """
        domains = DomainSet(["example.com", "*.example.com"])
        self.assertIsNone(domains.matches("127.0.0.1"))
        self.assertIsNone(domains.matches("::1"))

    def test_hosts_ending_in_digits_are_names(self) -> None:
        """
        A host whose last label merely contains digits (C{server1}) is a
        name, not an IP literal.
        """
        self.assertEqual(DomainSet(["server1"]).matches("server1"), "server1")
        self.assertEqual(DomainSet(["corp"]).matches("db2.corp"), "corp")

    def test_internationalized_pattern(self) -> None:
        """
        A pattern written in Unicode matches the host in its IDNA
        (punycode) form, which is what clients send.
        """
        domains = DomainSet(["bücher.example"])
        self.assertEqual(domains.matches("www.xn--bcher-kva.example"), "bücher.example")

    def test_empty(self) -> None:
        """
        An empty set matches nothing and is false; an empty host matches
        nothing.
        """
        self.assertIsNone(DomainSet([]).matches("example.com"))
        self.assertFalse(DomainSet([]))
        self.assertIsNone(DomainSet(["example.com"]).matches(""))
        self.assertEqual(len(DomainSet(["a.com", "b.com"])), 2)

    def test_invalid_pattern_raises(self) -> None:
        """
        L{DomainSet} refuses an invalid pattern with L{ValueError} naming
        the problem.
        """
        e = self.assertRaises(ValueError, DomainSet, ["ok.com", "bad*.com"])
        self.assertIn("'*' is only allowed as a leading '*.'", str(e))

    def test_many_patterns(self) -> None:
        """
        A large set still answers correctly for hits and misses.
        """
        domains = DomainSet([f"site{i}.example" for i in range(20000)])
        self.assertEqual(domains.matches("www.site19999.example"), "site19999.example")
        self.assertIsNone(domains.matches("www.site20000.example"))


class ValidateDomainPatternTests(SynchronousTestCase):
    """
    L{validate_domain_pattern} says what is wrong with a pattern.
    """

    def test_valid(self) -> None:
        """
        Names, wildcards, trailing dots, IDNs, underscores and IP literals
        are valid.
        """
        for pattern in [
            "example.com",
            "*.example.com",
            "example.com.",
            "localhost",
            "_dmarc.example.com",
            "xn--bcher-kva.example",
            "bücher.example",
            "a-b.example",
            "192.0.2.1",
            "2001:db8::1",
            "[::1]",
            "*.com",
            "docs.*",
            "DOCS.*",
            "docs.*.",
            "_x.*",
            "bücher.*",
        ]:
            self.assertIsNone(validate_domain_pattern(pattern), pattern)

    def test_invalid(self) -> None:
        """
        Each kind of bad pattern gets its own message.
        """
        cases = {
            "": "must not be empty",
            "exa mple.com": "must not contain spaces",
            " example.com": "must not contain spaces",
            "*": "'*' is only allowed as a leading '*.'",
            "*example.com": "'*' is only allowed as a leading '*.'",
            "www.*.example.com": "'*' is only allowed as a leading '*.'",
            "*.*.example.com": "'*' is only allowed as a leading '*.'",
            "exa*.com": "'*' is only allowed as a leading '*.'",
            "*.": "has no domain name",
            ".": "has no domain name",
            ".example.com": "has an empty label",
            "example..com": "has an empty label",
            "example.com:443": "must not include a port",
            "http://example.com": "must be a host name, not a URL",
            "example.com/path": "must be a host name, not a URL",
            "1.2.3": "neither a domain name",
            "999.1.1.1": "neither a domain name",
            "*.192.0.2.1": "a wildcard cannot apply to an IP address",
            "-bad.example": "has an invalid label '-bad'",
            "bad-.example": "has an invalid label 'bad-'",
            "ex!ample.com": "has an invalid label 'ex!ample'",
            ("a" * 64) + ".com": "has a label longer than 63 characters",
            ".".join(["abcdefghi"] * 26): "is longer than 253 characters",
            "2001:db8::zz": "is not a valid IPv6 address",
        }
        for pattern, message in cases.items():
            problem = validate_domain_pattern(pattern)
            self.assertIsNotNone(problem, pattern)
            assert problem is not None
            self.assertIn(message, problem, pattern)

    def test_invalid_message_quotes_pattern(self) -> None:
        """
        The message shows the offending pattern.
        """
        self.assertEqual(
            validate_domain_pattern("face*book.com"),
            "'face*book.com': '*' is only allowed as a leading '*.'",
        )

    def test_not_a_string(self) -> None:
        """
        A non-string pattern is reported with its type.
        """
        self.assertEqual(validate_domain_pattern(42), "must be a string, not int")


class NormalizeDomainPatternTests(SynchronousTestCase):
    """
    L{normalize_domain_pattern} gives the canonical form of a pattern.
    """

    def test_forms(self) -> None:
        """
        Lower case, no trailing dot, punycode, compressed IPv6, and the
        C{*.} prefix kept.
        """
        self.assertEqual(normalize_domain_pattern("WWW.Example.COM."), "www.example.com")
        self.assertEqual(normalize_domain_pattern("*.Example.com"), "*.example.com")
        self.assertEqual(normalize_domain_pattern("Bücher.example"), "xn--bcher-kva.example")
        self.assertEqual(normalize_domain_pattern("[2001:DB8:0::1]"), "2001:db8::1")

    def test_invalid_raises(self) -> None:
        """
        An invalid pattern raises L{ValueError}.
        """
        self.assertRaises(ValueError, normalize_domain_pattern, "a b")


class FirstLabelPatternTests(SynchronousTestCase):
    """
    The C{"docs.*"} form: any host whose first label is C{docs}, followed
    by at least one more label.
    """

    def test_matches_any_suffix(self) -> None:
        """
        C{"docs.*"} matches C{docs.} followed by any domain, of any depth.
        """
        domains = DomainSet(["docs.*"])
        for host in ["docs.python.org", "docs.rs", "docs.a.b.c.example", "DOCS.Python.org."]:
            self.assertEqual(domains.matches(host), "docs.*", host)

    def test_first_label_only(self) -> None:
        """
        The first label must be exactly C{docs}: not deeper, not a longer
        label, and C{docs} alone (no further label) does not match.
        """
        domains = DomainSet(["docs.*"])
        for host in [
            "docs",
            "docs.",
            "a.docs.python.org",
            "mydocs.example.com",
            "docs-old.example.com",
            "python.org",
        ]:
            self.assertIsNone(domains.matches(host), host)

    def test_not_ip(self) -> None:
        """
        An IP literal never matches a first-label pattern.
        """
        domains = DomainSet(["docs.*"])
        self.assertIsNone(domains.matches("192.0.2.1"))
        self.assertIsNone(domains.matches("::1"))

    def test_alone_and_mixed(self) -> None:
        """
        First-label patterns work alone and next to suffix patterns and
        IP literals; a matching suffix pattern answers before a first-label
        pattern.
        """
        domains = DomainSet(["docs.*", "example.com", "*.example.org", "192.0.2.1", "wiki.*"])
        self.assertEqual(domains.matches("docs.python.org"), "docs.*")
        self.assertEqual(domains.matches("wiki.example.net"), "wiki.*")
        self.assertEqual(domains.matches("docs.example.com"), "example.com")
        self.assertEqual(domains.matches("docs.example.org"), "*.example.org")
        self.assertEqual(domains.matches("example.org"), None)
        self.assertEqual(domains.matches("docs.example"), "docs.*")
        self.assertEqual(domains.matches("192.0.2.1"), "192.0.2.1")
        self.assertIsNone(domains.matches("blog.python.org"))

    def test_first_given_wins(self) -> None:
        """
        Of two patterns naming the same first label, the first given is the
        answer; case and a trailing dot do not make them differ.
        """
        domains = DomainSet(["Docs.*", "docs.*."])
        self.assertEqual(domains.matches("docs.rs"), "Docs.*")

    def test_idn(self) -> None:
        """
        An internationalized first label matches its punycode form.
        """
        domains = DomainSet(["bücher.*"])
        self.assertEqual(domains.matches("xn--bcher-kva.example"), "bücher.*")

    def test_many_patterns(self) -> None:
        """
        Many first-label patterns next to many suffix patterns still answer
        with the right one.
        """
        domains = DomainSet(
            [f"site{i}.example" for i in range(5000)] + [f"docs{i}.*" for i in range(5000)]
        )
        self.assertEqual(domains.matches("docs4999.python.org"), "docs4999.*")
        self.assertEqual(domains.matches("www.site4999.example"), "site4999.example")
        self.assertIsNone(domains.matches("docs5000.python.org"))

    def test_invalid(self) -> None:
        """
        C{".*"} must follow exactly one valid label, cannot be combined with
        a leading C{"*."}, and the label cannot be all digits.
        """
        cases = {
            "a.b.*": "'a.b.*': '.*' must follow exactly one label"
            " (like 'docs.*', which matches docs.python.org)",
            "*.docs.*": "'*.docs.*': '*.' and '.*' cannot be combined",
            ".*": "'.*': '*' is only allowed as a leading '*.'",
            "*.*": "'*.*': '*' is only allowed as a leading '*.'",
            "do*cs.*": "'do*cs.*': '*' is only allowed as a leading '*.'",
            "docs.**": "'docs.**': '*' is only allowed as a leading '*.'",
            "docs.*.com": "'docs.*.com': '*' is only allowed as a leading '*.'",
            "10.*": "'10.*': the label before '.*' is all digits"
            " (an IP address only matches itself)",
            "-docs.*": "'-docs.*' has an invalid label '-docs' (letters, digits,"
            " '-' and '_' only, no '-' at either end)",
            ("a" * 64) + ".*": f"'{'a' * 64}.*' has a label longer than 63 characters",
        }
        for pattern, message in cases.items():
            self.assertEqual(validate_domain_pattern(pattern), message, pattern)

    def test_normalize(self) -> None:
        """
        The canonical form lower-cases the label, drops a trailing dot and
        uses punycode.
        """
        self.assertEqual(normalize_domain_pattern("Docs.*"), "docs.*")
        self.assertEqual(normalize_domain_pattern("docs.*."), "docs.*")
        self.assertEqual(normalize_domain_pattern("Bücher.*"), "xn--bcher-kva.*")
