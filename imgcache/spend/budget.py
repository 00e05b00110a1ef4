"""What a budget is: a limit in USD per window of time, and the windows.

Windows are calendar periods in UTC (the hour, the day, the month), so every worker of a
fleet agrees on which one a call falls in and when it resets; a budget with no period is a
fixed amount that never resets. ``Budget.parse("50/day")`` reads the command line's form.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import ConfigError

PERIODS = ("hour", "day", "month")
SCOPES = ("namespace", "shared")
UNPRICED = ("allow", "refuse")
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
                math.isfinite(self.usd) and self.usd >= 0):
            raise ConfigError(f"budget usd must be a non-negative number of dollars, not {self.usd!r}")
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
