"""Spend limits for upstream calls: budgets per window, shared by every worker of a store
(:mod:`.budget` what a budget is, :mod:`.spending` how calls draw on it, :mod:`.alerts` the
warning webhook; the ledgers are the tiers', :mod:`imgcache.store.ledger`)."""
