"""What the limits on upstream calls are: a budget (USD per window of time, and the windows)
and rate limits (requests and images per minute per model).

Windows are calendar periods in UTC (the hour, the day, the month), so every worker of a
fleet agrees on which one a call falls in and when it resets; a budget with no period is a
fixed amount that never resets. ``Budget.parse("50/day")`` reads the command line's form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .limiter import Rates

MAX_USD = 1e9
"""The largest budget, price or cost in USD: amounts stay exact in the ledgers (Redis's Lua)."""
PERIODS = ("hour", "day", "month")
SCOPES = ("namespace", "shared")
UNPRICED = ("allow", "refuse")
ANY_MODEL = "*"
_PAIR = re.compile(r"(?P<model>[A-Za-z0-9._:/*-]{1,100})=(?P<rate>[0-9]+(?:\.[0-9]+)?)")
_FORM = re.compile(r"\$?\s*(?P<usd>[0-9]+(?:\.[0-9]+)?)\s*(?:/\s*(?P<per>[a-z]+))?")


@dataclass(frozen=True)
class Window:
    """One budget window: its name in the ledger and when it ends (None: never)."""

    name: str
    resets_at: float | None

    def seconds_left(self, now: float) -> float | None:
        return None if self.resets_at is None else max(0.0, self.resets_at - now)


@dataclass(frozen=True)
class Budget:
    """A limit on what upstream calls may cost, checked before each one (hits are free).

    ``usd`` per ``per`` ("hour", "day" or "month" in UTC; None: a fixed amount). ``warn_at``:
    the fraction of ``usd`` at which a warning is logged once per window (and sent to
    ``webhook``, a URL that gets a JSON POST); None: no warning. ``scope``: "namespace" (each
    namespace its own budget) or "shared" (one for every namespace on the same store).
    ``unpriced``: what to do with a call whose price is unknown (a model missing from the
    pricing table): "allow" it uncounted (logged once) or "refuse" it.
    """

    usd: float
    per: str | None = None
    warn_at: float | None = 0.8
    scope: str = "namespace"
    webhook: str | None = None
    unpriced: str = "allow"

    def __post_init__(self) -> None:
        if isinstance(self.usd, bool) or not isinstance(self.usd, (int, float)) or not (
                math.isfinite(self.usd) and 0 <= self.usd <= MAX_USD):
            raise ConfigError(f"budget usd must be 0 to {MAX_USD:g} dollars, not {self.usd!r}")
        if self.per is not None and self.per not in PERIODS:
            raise ConfigError(f"budget per must be one of {', '.join(PERIODS)} or None, not {self.per!r}")
        if self.warn_at is not None and (isinstance(self.warn_at, bool) or not isinstance(self.warn_at, (int, float))
                                         or not 0 < self.warn_at <= 1):
            raise ConfigError(f"budget warn_at must be a fraction in (0, 1] or None, not {self.warn_at!r}")
        if self.scope not in SCOPES:
            raise ConfigError(f"budget scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")
        if self.unpriced not in UNPRICED:
            raise ConfigError(f"budget unpriced must be one of {', '.join(UNPRICED)}, not {self.unpriced!r}")
        if self.webhook is not None and not re.match(r"https?://[^\s/]+", str(self.webhook)):
            raise ConfigError(f"budget webhook must be an http(s) URL, not {self.webhook!r}")

    @classmethod
    def parse(cls, text: str, **options: object) -> Budget:
        """``"50/day"``, ``"$0.5/hour"``, ``"20"`` (a fixed amount); ConfigError naming the text."""
        match = _FORM.fullmatch(text.strip().lower()) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(f"budget {text!r} must look like 50/day, 2.5/hour, 300/month or 20 (a fixed amount)")
        per = match["per"]
        if per is not None and per not in PERIODS:
            raise ConfigError(f"budget {text!r}: the period must be one of {', '.join(PERIODS)}, not {per!r}")
        return cls(float(match["usd"]), per, **options)  # type: ignore[arg-type]

    def window(self, now: float) -> Window:
        """The window that ``now`` (a Unix time) falls in."""
        if self.per is None:
            return Window("total", None)
        from datetime import datetime, timedelta, timezone  # here: ``import imgcache`` stays fast

        at = datetime.fromtimestamp(now, timezone.utc)
        if self.per == "hour":
            start = at.replace(minute=0, second=0, microsecond=0)
            return Window(start.strftime("%Y-%m-%dT%H"), (start + timedelta(hours=1)).timestamp())
        if self.per == "day":
            start = at.replace(hour=0, minute=0, second=0, microsecond=0)
            return Window(start.strftime("%Y-%m-%d"), (start + timedelta(days=1)).timestamp())
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return Window(start.strftime("%Y-%m"), following.timestamp())

    def describe(self) -> str:
        return f"${self.usd:g}" + (f"/{self.per}" if self.per else " in all")


@dataclass(frozen=True)
class RateLimits:
    """Requests (``rpm``) and images per minute (``ipm``) per model; ``"*"`` is one queue for
    every model not named (together). A call waits for its turn up to ``queue_timeout``
    seconds; ``burst`` requests may go at once. With no rates at all, upstream 429s still pause
    the model (every model not named: their shared queue) for every caller."""

    rpm: Mapping[str, float] = field(default_factory=dict)
    ipm: Mapping[str, float] = field(default_factory=dict)
    queue_timeout: float = 30.0
    burst: float = 1.0

    def __post_init__(self) -> None:
        for name, rates in (("rpm", self.rpm), ("ipm", self.ipm)):
            if not isinstance(rates, Mapping):
                raise ConfigError(f"{name} must map a model to a rate per minute, not {rates!r}")
            for model, rate in rates.items():
                if not isinstance(model, str) or isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (
                        math.isfinite(rate) and rate > 0):
                    raise ConfigError(f"{name} {model}={rate}: needs a model and a positive number per minute")
        if isinstance(self.queue_timeout, bool) or not isinstance(self.queue_timeout, (int, float)) or not (
                0 <= self.queue_timeout <= 3600):
            raise ConfigError(f"queue_timeout must be 0 to 3600 seconds, not {self.queue_timeout!r}")
        if not (isinstance(self.burst, (int, float)) and self.burst >= 1):
            raise ConfigError(f"burst must be at least 1, not {self.burst!r}")

    @classmethod
    def parse(cls, rpm: Sequence[str] = (), ipm: Sequence[str] = (), **options: Any) -> RateLimits:
        """From the command line's ``model=rate`` pairs (``dall-e-3=5``, ``*=50``)."""
        def pairs(texts: Sequence[str], flag: str) -> dict[str, float]:
            found = {}
            for text in texts:
                match = _PAIR.fullmatch(text.strip())
                if match is None:
                    raise ConfigError(f"{flag} {text!r} must look like dall-e-3=5 (a model, '=', a rate per minute)")
                found[match["model"]] = float(match["rate"])
            return found

        return cls(pairs(rpm, "--rpm"), pairs(ipm, "--ipm"), **options)

    def rates_for(self, model: str, images: int) -> Rates:
        from .limiter import Rates

        rpm = self.rpm.get(model, self.rpm.get(ANY_MODEL))
        ipm = self.ipm.get(model, self.ipm.get(ANY_MODEL))
        return Rates.per_minute(rpm, ipm, burst=self.burst, images_per_request=max(1, images))
