"""Engine-wide settings of the routing core."""

# Theory of operation
# -------------------
# Queue rules live in each `QueueConfig`; what applies to every queue lives
# here: the VIP head starts of the ordering rule (contacts.py) and the handle
# time the expected-wait estimator starts from and how fast it follows new
# handle times (stats.py). The service's config section maps onto this struct.

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edge_node.core.routing.contacts import DEFAULT_VIP_CREDIT_S, VipTier, check_seconds, check_vip_credits
from edge_node.core.routing.errors import RoutingConfigError


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Engine-wide settings.

    Attributes:
        vip_credit_s: VIP tier -> head start in seconds in the ordering rule; missing tiers get none.
        default_handle_s: Handle time assumed for expected waits before a queue has released anything.
        handle_smoothing: Weight of the newest handle time in the smoothed average, in (0, 1].
    """

    vip_credit_s: Mapping[VipTier, float] = field(default_factory=lambda: DEFAULT_VIP_CREDIT_S)
    default_handle_s: float = 180.0
    handle_smoothing: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "vip_credit_s", check_vip_credits(self.vip_credit_s))
        check_seconds("default_handle_s", self.default_handle_s, positive=True)
        smoothing = self.handle_smoothing
        if isinstance(smoothing, bool) or not isinstance(smoothing, int | float) or not 0 < smoothing <= 1:
            raise RoutingConfigError("handle_smoothing", smoothing, "must lie in (0, 1]")
