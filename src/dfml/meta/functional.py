"""Fast-weight adaptation through ``torch.func.functional_call`` (no fast-weight layer classes).

Meta models keep BN without running statistics, so they hold parameters only
and a model is fully described by a dict ``{name: tensor}``.
"""

from __future__ import annotations

import copy
import types
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator

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


def adapt_batched(model: nn.Module, params: Params, xs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn,
                  steps: int, lr: float, second_order: bool) -> Params:
    """:func:`adapt` for T tasks of the same shapes at once, under ``torch.func.vmap``: ``[T, ...]`` fast weights.

    `xs` ``[T, n, C, H, W]`` and `targets` ``[T, n]`` or ``[T, n, N]`` are the tasks' support sets, stacked;
    every task starts from the same `params`. The inner gradients come from ``torch.func.grad``; with
    ``second_order=False`` they are taken at detached weights (first-order MAML), so the outer gradient reaches
    `params` through the identity path only, as in :func:`adapt`. The result agrees with a loop of :func:`adapt`
    to float rounding, not bit for bit. Run it inside :func:`batch_norm_by_hand` when the model has batch norm
    (second-order meta-gradients are wrong otherwise).
    """
    def support_loss(p: Params, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, p, (x,)), t)

    def one(x: torch.Tensor, t: torch.Tensor) -> Params:
        p = params
        for _ in range(steps):
            g = grad(support_loss)(p if second_order else {k: v.detach() for k, v in p.items()}, x, t)
            p = {k: p[k] - lr * g[k] for k in p}
        return p

    if steps == 0:
        return {k: v.expand(xs.shape[0], *v.shape) for k, v in params.items()}
    return vmap(one)(xs, targets)


def batched_loss(model: nn.Module, params: Params, x: torch.Tensor, target: torch.Tensor,
                 loss_fn: LossFn) -> torch.Tensor:
    """``[T]`` losses ``loss_fn(F(x[i]; params[i]), target[i])`` of T models at once (``torch.func.vmap``): params
    ``[T, ...]`` (as from :func:`adapt_batched`), x ``[T, n, C, H, W]``, target ``[T, n]`` or ``[T, n, N]``."""
    return vmap(lambda p, xx, t: loss_fn(functional_call(model, p, (xx,)), t))(params, x, target)


def _batch_norm_from_moments(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm written out from the batch mean and (biased) variance."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    out = (x - mean) * torch.rsqrt(var + self.eps)
    if self.affine:
        shape = [1, -1] + [1] * (x.dim() - 2)
        out = out * self.weight.view(shape) + self.bias.view(shape)
    return out


@contextmanager
def batch_norm_by_hand(model: nn.Module) -> Iterator[None]:
    """Within the block, `model`'s batch-norm layers that normalise with batch statistics (training mode, or no
    running statistics) compute it from the batch mean and variance by hand, instead of the fused kernel.

    Under ``torch.func.vmap``, the fused training-mode ``batch_norm`` gives wrong double-backward results
    (functorch issue #534): second-order meta-gradients of a vmapped inner loop came out tenths of a percent
    to about 5% off (and the conv biases before BN, whose true gradient is zero, got a non-zero one), in
    float64 too. The written-out form differentiates correctly at any order. Layers that would update running
    statistics keep their own forward (vmap cannot update buffers in any case). Only this model's layers are
    changed, and only until the block ends.
    """
    patched = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and "forward" not in m.__dict__:
            m.forward = types.MethodType(_patched_batch_norm_forward, m)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def _patched_batch_norm_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if self.training and self.track_running_stats:  # would update running statistics: leave it as it is
        return type(self).forward(self, x)
    if not self.training and self.running_mean is not None:  # eval with running statistics: no batch statistics
        return type(self).forward(self, x)
    self._check_input_dim(x)
    return _batch_norm_from_moments(self, x)


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
