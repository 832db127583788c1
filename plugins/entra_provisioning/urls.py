"""URL facts shared by the config (which checks them) and the hooks (which use them): no I/O, no policy.

Key Vault secret URLs and ``https`` origins are parsed in one place, so the config validator and the
hook that sends a token somewhere can never disagree about what a URL means.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

_SECRET_PATH_RE = re.compile(r"^/secrets/(?P<name>[0-9A-Za-z-]{1,127})(?:/(?P<version>[0-9A-Za-z]{32}))?/?$")


@dataclass(frozen=True)
class SecretRef:
    """A Key Vault secret reference parsed from its URL."""

    vault_url: str
    name: str
    version: str | None = None

    @property
    def vault_host(self) -> str:
        return urlsplit(self.vault_url).netloc


@dataclass(frozen=True)
class Origin:
    """An ``https`` origin, normalised as httpx normalises request URLs (lower-case host, no port 443).

    Comparing like with like matters: ``https://Host:443`` must not refuse its own requests.
    """

    host: str
    port: int

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{shown}" + ("" if self.port == 443 else f":{self.port}")


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None


def parse_secret_url(url: str) -> SecretRef:
    """Split a Key Vault secret URL into vault, name and optional version.

    :param url: ``https://<vault>.vault.azure.net/secrets/<name>[/<version>]``
    :raises ValueError: when the URL is not a Key Vault secret URL.
    """
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError("must be an https:// URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, fragment or credentials")
    _port(parts)
    match = _SECRET_PATH_RE.match(parts.path)
    if not parts.hostname or not match:
        raise ValueError(
            "must be a Key Vault secret URL like https://<vault>.vault.azure.net/secrets/<name>[/<version>]"
        )
    return SecretRef(f"https://{parts.netloc}", match["name"], match["version"])


def https_origin(url: str, example: str = "https://<host>") -> Origin:
    """The origin of an ``https`` URL that must be an origin alone (no path, query or credentials).

    :param example: how a good value looks, for the error message.
    :raises ValueError: naming what is wrong.
    """
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError("must be an https:// URL (the token must never travel in clear text)")
    if not parts.hostname:
        raise ValueError(f"must be a URL like {example}")
    if parts.query or parts.fragment or parts.username is not None or parts.password:
        raise ValueError("must not carry a query, fragment or credentials")
    if parts.path not in ("", "/"):
        raise ValueError(f"must be {example} alone, without a path")
    port = _port(parts)
    return Origin(parts.hostname.lower(), port or 443)


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` matches one of the allow-list patterns (``*.suffix`` or an exact host)."""
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in patterns)
