"""One module per stage of ``dvc.yaml`` (``python -m dfml.pipeline.<stage>``): the only layer that reads
params.yaml and knows where artifacts live (:mod:`.paths`). Method code lives in the concept packages."""
