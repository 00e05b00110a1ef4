"""Near-duplicate matching: ``semantic`` (generation prompts) and ``perceptual`` (vision
images), and what both use: ``config`` (their options), ``optional`` (their optional stacks)
and ``feed`` (the shared feed their indexes follow)."""
