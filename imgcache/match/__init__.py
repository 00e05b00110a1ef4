"""Semantic (generation) and, later, perceptual (vision) matching."""
