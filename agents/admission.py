"""Rate limits at Run admission: the domain spec's and the deployment's, the tightest wins.

The spec's `rate_limits` (tenant, user, domain) and AGENTMESH_RATE_LIMIT_* all
apply; memory's RateLimiter takes a token from every bucket or from none and
answers RESOURCE_EXHAUSTED (RATE_LIMITED) with RetryInfo naming the limit.
"""

from __future__ import annotations

import dataclasses
import math

from agentmesh.kit.config import RateSpec, Settings
from agents.caller import Caller
from agents.spec import DomainSpec, RateLimit
from memory.rate_limits import Limit, RateLimiter, admission_limits


def _rate(limit: RateLimit) -> RateSpec:
    return RateSpec(limit.requests_per_second, limit.burst or max(1, math.ceil(limit.requests_per_second)))


def run_limits(spec: DomainSpec, settings: Settings, caller: Caller) -> list[Limit]:
    limits = admission_limits(settings, tenant=caller.tenant, user=caller.user, domain=spec.slug)
    configured = spec.rate_limits
    if configured.tenant is not None:
        limits.append(Limit.tenant(caller.tenant, _rate(configured.tenant)))
    if configured.user is not None:
        limits.append(Limit.user(caller.tenant, caller.user, _rate(configured.user)))
    if configured.domain is not None:
        limits.append(Limit.domain(spec.slug, _rate(configured.domain)))
    # The same bucket named twice (spec and environment): one bucket, the tighter rate and burst.
    merged: dict[str, Limit] = {}
    for limit in limits:
        known = merged.get(limit.key)
        merged[limit.key] = (
            limit
            if known is None
            else dataclasses.replace(
                known, per_second=min(known.per_second, limit.per_second), burst=min(known.burst, limit.burst)
            )
        )
    return list(merged.values())


class RunAdmission:
    def __init__(self, limiter: RateLimiter, spec: DomainSpec, settings: Settings) -> None:
        self.limiter = limiter
        self.spec = spec
        self.settings = settings

    async def admit(self, caller: Caller) -> None:
        """Take one token from every applicable bucket, or raise ResourceExhausted with RetryInfo."""
        await self.limiter.admit(run_limits(self.spec, self.settings, caller))
