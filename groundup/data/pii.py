"""PII formatting: replace e-mail addresses and public IP addresses with placeholders.

Like datatrove's `PIIFormatter` (FineWeb's last step): every e-mail address
becomes one of a few placeholders at example.com/example.org (domains kept
for documentation, RFC 2606), used in turn; every IPv4 and IPv6 address that
the `ipaddress` module calls global (public) becomes a placeholder, while
private, loopback, link-local, reserved and documentation addresses
(10.0.0.1, 127.0.0.1, 192.168.1.1, ::1, fe80::1) are left alone: they point
at nobody. The stage never drops a document; it counts what it replaced in
`doc.meta["pii_emails"]` / `doc.meta["pii_ips"]` when it replaced anything.
"""
from __future__ import annotations

import ipaddress
import re
from itertools import cycle

from groundup.data.document import Document

EMAIL_PLACEHOLDERS = ("email@example.com", "firstname.lastname@example.org")
# Addresses from the documentation ranges (RFC 5737 / RFC 3849): valid, and nobody's.
IPV4_PLACEHOLDERS = ("192.0.2.1", "198.51.100.7", "203.0.113.42")
IPV6_PLACEHOLDERS = ("2001:db8::1", "2001:db8::42")

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![\w-])"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
# Candidate IPv6: hex groups with at least two colons; ipaddress decides whether it really is one.
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:)(?![\w:])")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def is_public_ip(text: str) -> bool:
    """A valid IPv4/IPv6 address that is globally routable (not private, loopback, reserved...)."""
    try:
        return ipaddress.ip_address(text).is_global
    except ValueError:
        return False


class PIIFormatter:
    """Stage: replace e-mail addresses and public IP addresses with placeholders."""

    name = "pii"

    def __init__(self, *, emails: bool = True, ips: bool = True, only_public_ips: bool = True,
                 email_placeholders: tuple[str, ...] = EMAIL_PLACEHOLDERS,
                 ipv4_placeholders: tuple[str, ...] = IPV4_PLACEHOLDERS,
                 ipv6_placeholders: tuple[str, ...] = IPV6_PLACEHOLDERS):
        self.emails = emails
        self.ips = ips
        self.only_public_ips = only_public_ips
        self.email_placeholders = email_placeholders
        self.ipv4_placeholders = ipv4_placeholders
        self.ipv6_placeholders = ipv6_placeholders

    def _replace_ips(self, text: str, pattern: re.Pattern, placeholders: tuple[str, ...]) -> tuple[str, int]:
        pool = cycle(placeholders)
        count = 0

        def replace(m: re.Match) -> str:
            nonlocal count
            found = m.group()
            if pattern is _IPV6 and not any(c.isdigit() for c in found):
                return found  # "ab::cd" in code is valid IPv6 in theory, never in practice
            if is_public_ip(found) if self.only_public_ips else _is_ip(found):
                count += 1
                return next(pool)
            return found

        return pattern.sub(replace, text), count

    def format(self, text: str) -> tuple[str, int, int]:
        """(text with PII replaced, e-mails replaced, IP addresses replaced)."""
        n_emails = n_ips = 0
        if self.emails and "@" in text:
            pool = cycle(self.email_placeholders)
            text, n_emails = _EMAIL.subn(lambda m: next(pool), text)
        if self.ips and "." in text:
            text, n = self._replace_ips(text, _IPV4, self.ipv4_placeholders)
            n_ips += n
        if self.ips and text.count(":") >= 2:
            text, n = self._replace_ips(text, _IPV6, self.ipv6_placeholders)
            n_ips += n
        return text, n_emails, n_ips

    def apply(self, doc: Document) -> Document:
        text, n_emails, n_ips = self.format(doc.text)
        if n_emails or n_ips:
            doc.text = text
            if n_emails:
                doc.meta["pii_emails"] = n_emails
            if n_ips:
                doc.meta["pii_ips"] = n_ips
        return doc
