"""API inversion: recover pseudo tasks from an API's answers (zero-order or exact gradients)."""
