"""The client side of the black-box boundary: APIs answer batches of images, and every image sent is counted.

:mod:`.base` (the query interface and the ledger), :mod:`.answers` (answer modes), :mod:`.backends` (in-process
or HTTP), :mod:`.budget` (budget stops). The API owner's side (training the pool, serving it) is
:mod:`dfml.owner`.
"""
