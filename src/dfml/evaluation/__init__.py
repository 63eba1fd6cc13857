"""Episodic evaluation: fixed seeded episodes (:mod:`.episodic`), what each model is and how it adapts
(:mod:`.candidates`), re-scoring checkpoints on meta-val (:mod:`.rescore`)."""
