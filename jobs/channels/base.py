"""What every channel shares: the Notification sent, the DeliveryResult that came back, and the
Channel interface (``send(notification) -> DeliveryResult``, never raising for a failed delivery).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Notification:
    """One message to one department about one event, at one escalation level."""

    event_id: str
    department: str
    subject: str
    body: str
    level: int = 0
    priority: str = "emergency"
    deadline: str | None = None
    event: Mapping[str, Any] | None = None  # the department's view of the event (wire form)

    @property
    def idempotency_key(self) -> str:
        """Same for every retry of this notification; differs per department and level."""
        return f"{self.event_id}:{self.department}:{self.level}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["event"] = dict(self.event) if self.event is not None else None
        data["idempotency_key"] = self.idempotency_key
        return data


@dataclass(frozen=True)
class DeliveryResult:
    channel: str
    target: str
    ok: bool
    attempts: int
    detail: str
    elapsed_s: float = 0.0
    permanent: bool = False  # retrying later will not help (bad address, 4xx, missing secret)


class Channel(ABC):
    kind: str
    target: str

    @abstractmethod
    def send(self, notification: Notification) -> DeliveryResult:
        """Deliver, retrying as configured; never raises for a delivery failure."""


def _missing_env(channel: str, target: str, name: str) -> DeliveryResult:
    return DeliveryResult(
        channel, target, False, 0, f"environment variable {name} is not set", permanent=True
    )
