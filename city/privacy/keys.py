"""The key ring and keyed pseudonyms: HMAC keys per (domain, period), the signer, consent ids.

Pseudonyms are HMAC-SHA256 under a key per (domain, period): stable inside a period (so a
department can join its own data), different across periods and domains, and severed for good
when the period's key is deleted. A plain hash is never used: over a small identifier space
(plates, phone numbers) it is reversed by enumeration. Keys live in a secrets file or an
environment variable, never in code (`KeyRing`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from city.privacy.config import KeysConfig


class KeyError_(LookupError):
    """No key for a (domain, period): the pseudonym cannot be made (the field is dropped)."""


def period_of(time_text: str, period: str) -> str:
    """The key period an event time (RFC 3339) falls in: 2026-11-25, 2026-W48, 2026-11..."""
    if period == "month":
        return time_text[:7]
    if period == "year":
        return time_text[:4]
    if period == "day":
        return time_text[:10]
    day = datetime.fromisoformat(time_text[:10])
    if period == "week":
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


class KeyRing:
    """HMAC keys per (domain, period) and the consent key, loaded from a secrets file.

    File format (JSON, mode 0600)::

        {"consent": "<base64 32 bytes>",
         "domains": {"sdot": {"2026-11": "<base64>", "2026-12": "<base64>"}}}

    Key ids are ``domain/period/fingerprint`` (first 8 hex of SHA-256 of the key), so a
    recipient knows which period a pseudonym belongs to, and a replaced key is told apart.
    """

    def __init__(self, domains: Mapping[str, Mapping[str, bytes]], consent: bytes | None = None):
        self.domains = {d: dict(p) for d, p in domains.items()}
        self.consent = consent
        self._ids: dict[tuple[str, str], str] = {}
        self._signers: dict[tuple[str, str], Signer | None] = {}
        self.source: Path | None = None  # the file it was loaded from

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str = "<keys>") -> KeyRing:
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: keys file must be a JSON object")
        try:
            domains = {
                d: {p: _b64(k) for p, k in periods.items()}
                for d, periods in (doc.get("domains") or {}).items()
            }
            consent = _b64(doc["consent"]) if doc.get("consent") else None
        except (AttributeError, ValueError, TypeError) as exc:
            raise ValueError(f"{where}: malformed keys file ({exc})") from None
        return cls(domains, consent)

    @staticmethod
    def path(config: KeysConfig, base_dir: Path | None = None) -> Path | None:
        """The secrets file: `config.file` (relative to `base_dir`), else `$config.env`."""
        name = config.file or os.environ.get(config.env)
        if not name:
            return None
        path = Path(name)
        if not path.is_absolute() and base_dir is not None and config.file:
            path = base_dir / path
        return path

    @classmethod
    def load(cls, config: KeysConfig, base_dir: Path | None = None) -> KeyRing:
        """The keys of the secrets file (none when no file is configured)."""
        path = cls.path(config, base_dir)
        return cls({}) if path is None else cls.load_file(path)

    @classmethod
    def load_file(cls, path: Path) -> KeyRing:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read privacy keys ({exc})") from None
        ring = cls.from_json(doc, str(path))
        ring.source = path
        return ring

    def key(self, domain: str, period: str) -> bytes:
        try:
            return self.domains[domain][period]
        except KeyError:
            raise KeyError_(f"no pseudonym key for domain {domain!r}, period {period!r}") from None

    def key_id(self, domain: str, period: str) -> str:
        found = self._ids.get((domain, period))
        if found is None:
            digest = hashlib.sha256(self.key(domain, period)).hexdigest()[:8]
            found = self._ids[(domain, period)] = f"{domain}/{period}/{digest}"
        return found

    def signer(self, domain: str, period: str) -> Signer | None:
        """The prepared HMAC for (domain, period); None when there is no such key."""
        found = self._signers.get((domain, period), _UNSET)
        if found is _UNSET:
            try:
                found = Signer(self.key(domain, period), self.key_id(domain, period))
            except KeyError_:
                found = None
            self._signers[(domain, period)] = found
        return found  # type: ignore[return-value]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "domains": {
                d: {p: base64.b64encode(k).decode() for p, k in sorted(periods.items())}
                for d, periods in sorted(self.domains.items())
            }
        }
        if self.consent is not None:
            out["consent"] = base64.b64encode(self.consent).decode()
        return out

    def ensure(self, domains: Iterable[str], periods: Iterable[str]) -> list[str]:
        """Create missing keys (os.urandom, 32 bytes); returns the key ids created."""
        created = []
        if self.consent is None:
            self.consent = os.urandom(32)
            created.append("consent")
        for period in periods:
            for domain in domains:
                if period not in self.domains.setdefault(domain, {}):
                    self.domains[domain][period] = os.urandom(32)
                    created.append(self.key_id(domain, period))
                    self._signers.pop((domain, period), None)
        return created

    def drop_period(self, period: str) -> int:
        """Delete every domain's key for `period`: its pseudonyms can never be linked again."""
        count = 0
        for periods in self.domains.values():
            if periods.pop(period, None) is not None:
                count += 1
        self._ids = {k: v for k, v in self._ids.items() if k[1] != period}
        self._signers = {k: v for k, v in self._signers.items() if k[1] != period}
        return count


def _b64(text: str) -> bytes:
    key = base64.b64decode(text, validate=True)
    if len(key) < 16:
        raise ValueError("keys must be at least 16 bytes")
    return key


_UNSET: Any = object()
_STRIP = str.maketrans("", "", " \t\r\n-")


def normalise_subject(value: Any) -> str:
    """One spelling per citizen identifier: no spaces or hyphens, upper case."""
    if type(value) is str and value.isalnum():  # nothing to strip (the usual identifier)
        return value.upper()
    return str(value).translate(_STRIP).upper()


class Signer:
    """HMAC-SHA256 under one key, with the padded key states hashed once (RFC 2104).

    Copying the two prepared SHA-256 states costs a fraction of `hmac.digest`, which
    re-derives them on every call; the output is the same HMAC.
    """

    __slots__ = ("_inner", "_outer", "kid")

    def __init__(self, key: bytes, kid: str = ""):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        block = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.kid = kid

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def pseudonym(self, value: Any) -> str:
        """`pseudonym` under this key (the digest inlined: one call per delivered field)."""
        inner = self._inner.copy()
        inner.update(normalise_subject(value).encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:16].hex()


def pseudonym(key: bytes, value: Any) -> str:
    """Keyed pseudonym: HMAC-SHA256 of the normalised identifier, 128 bits as 32 hex.

    Normalised (`normalise_subject`) so that ``KXT-4410`` and ``kxt 4410`` join."""
    return hmac.digest(key, normalise_subject(value).encode(), "sha256")[:16].hex()


def consent_id(key: bytes, kind: str, value: Any) -> str:
    """The citizen's pseudonym in the consent registry (stable: consent outlives periods)."""
    return (
        "c" + hmac.digest(key, f"{kind}:{normalise_subject(value)}".encode(), "sha256")[:16].hex()
    )
