"""The API owner's side of the boundary: training the pool (:mod:`.pool`) and serving it over HTTP
(:mod:`.server`). The only code that sees API weights, besides the clearly named white-box reference."""
