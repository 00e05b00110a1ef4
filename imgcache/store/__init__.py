"""Storage tiers (memory, disk, Redis, S3) behind one small protocol, and the tiered store."""
