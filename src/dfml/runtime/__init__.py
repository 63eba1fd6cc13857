"""How a run is carried out, never what it computes: checkpoints, locks and the `runtime` params section."""
