"""The hub's configuration: where it keeps data and where it listens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Where the hub keeps its data and where it listens."""

    data_dir: Path
    nats: tuple[str, int] = ("127.0.0.1", 4222)
    leaf: tuple[str, int] = ("127.0.0.1", 7422)
    http: tuple[str, int] = ("127.0.0.1", 8090)
    down_after_s: float = 10.0

    @property
    def secret_path(self) -> Path:
        return self.data_dir / "secrets" / "api-token.key"
