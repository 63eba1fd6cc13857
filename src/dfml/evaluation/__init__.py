"""Episodic evaluation: fixed seeded episodes, per-model adaptation settings chosen on meta-val."""
