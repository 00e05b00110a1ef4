"""What upstream calls may spend: money and rate.

:mod:`.config` (what a budget, its windows and rate limits are), :mod:`.spending` (how calls draw on a
budget), :mod:`.alerts` (the warning webhook), :mod:`.limiter` (token buckets per model,
shared in Redis), :mod:`.shaping` (live calls wait their turn under the buckets),
:mod:`.outcomes` (what an upstream failure means: 429, 5xx, refusals). The ledgers and shared
buckets are the tiers' (:mod:`imgcache.store.ledger`, :mod:`imgcache.store.rate`).
"""
