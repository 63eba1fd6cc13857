"""Fast-weight adaptation through ``torch.func.functional_call`` (no fast-weight layer classes).

Meta models keep BN without running statistics, so they hold parameters only
and a model is fully described by a dict ``{name: tensor}``.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def get_params(model: nn.Module) -> Params:
    return dict(model.named_parameters())


def forward(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    return functional_call(model, params, (x,))


def adapt(model: nn.Module, params: Params, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn,
          steps: int, lr: float, second_order: bool) -> Params:
    """`steps` SGD steps of ``loss_fn(F(x; params), target)`` from `params`; returns the fast weights.

    With ``second_order=False`` the inner gradients are detached (first-order
    MAML): the outer gradient still reaches `params` through the identity path.
    """
    for _ in range(steps):
        loss = loss_fn(forward(model, params, x), target)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=second_order)
        params = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    return params


def _single_threaded_episodes(model: nn.Module, params: Params, xs: torch.Tensor, ys: torch.Tensor,
                              xq: torch.Tensor, steps: int, lr: float, workers: int) -> torch.Tensor:
    """Each episode adapted with :func:`adapt` (first order: nothing flows back to `params`), then its query
    logits, over `workers` Python threads with one intra-op thread and one model replica each.

    Small convolutions keep two intra-op threads mostly waiting on each other. Episode ``i``
    runs on worker ``i % workers`` and every op single-threaded, so the logits do not depend
    on `workers` or on scheduling. Each worker has its own replica because ``functional_call``
    swaps a module's parameters while it runs.
    """
    replicas = [copy.deepcopy(model) for _ in range(workers)]
    out: list[torch.Tensor | None] = [None] * xs.shape[0]

    def work(w: int) -> None:
        for i in range(w, xs.shape[0], workers):
            start = {k: v.detach().requires_grad_() for k, v in params.items()}  # leaves adapt differentiates
            fast = adapt(replicas[w], start, as_float(xs[i]), ys[i], F.cross_entropy, steps, lr, second_order=False)
            with torch.no_grad():
                out[i] = functional_call(replicas[w], fast, (as_float(xq[i]),))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(work, w) for w in range(workers)]:
                f.result()
    finally:
        torch.set_num_threads(threads)
    return torch.stack(out)  # type: ignore[arg-type]


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Images as ``float32`` in ``[0, 1]``: ``uint8`` pixels are divided by 255, float images pass unchanged."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def adapt_and_predict_batched(model: nn.Module, params: Params, xs: torch.Tensor, ys: torch.Tensor,
                              xq: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """Adapt to E episodes with cross-entropy and return query logits.

    On CUDA the episodes run together under ``torch.func.vmap``. On CPU,
    vmapped convolutions become grouped convolutions and ran 2.5x slower
    (measured, Conv4 at 28 px, 2 cores), and one episode's small convolutions
    do not keep two intra-op threads busy; so episodes are spread over one
    single-threaded worker per CPU thread (``torch.get_num_threads()``). Results
    do not depend on the number of workers.

    Args:
        xs: ``[E, N*K, C, H, W]`` support images; ys: ``[E, N*K]`` labels.
        xq: ``[E, M, C, H, W]`` query images. Images are float in ``[0, 1]``, or ``uint8`` pixels, which
            become float one episode at a time on CPU (E episodes of MiniImageNet at 84 px are 0.85 GB as
            float for E = 100, 5-shot).
    Returns:
        ``[E, M, N]`` logits of the adapted models (BN uses each set's batch statistics).
    """
    params = {k: v.detach() for k, v in params.items()}
    if xs.device.type == "cuda":
        xs, xq = as_float(xs), as_float(xq)
        def support_loss(p, x, y):
            return F.cross_entropy(functional_call(model, p, (x,)), y)

        def one(p, x, y, q):
            for _ in range(steps):
                g = grad(support_loss)(p, x, y)
                p = {k: p[k] - lr * g[k] for k in p}
            return functional_call(model, p, (q,))

        return vmap(one, in_dims=(None, 0, 0, 0))(params, xs, ys, xq)
    workers = max(1, min(torch.get_num_threads(), xs.shape[0]))  # one per intra-op thread
    return _single_threaded_episodes(model, params, xs, ys, xq, steps, lr, workers)


def forward_groups(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """``[G, B, C, H, W] -> [G, B, N]``: each group is its own batch (its own BN statistics).

    vmap on CUDA; a loop over groups on CPU, where vmapped convolutions are slower.
    """
    if x.device.type == "cuda":
        return vmap(lambda xx: functional_call(model, params, (xx,)))(x)
    return torch.stack([functional_call(model, params, (xx,)) for xx in x])
