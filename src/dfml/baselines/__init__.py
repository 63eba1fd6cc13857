"""Data-free baselines: Best-API, Single-DFKD, Distill-Avg, distilled from the recovered tasks of `invert`
(:mod:`.methods`, registry :data:`~.methods.BASELINES`)."""
