"""Tower shards held as rows of one whole tensor, so a merged layer reads its weights in place.

A `Sharded` layer keeps one tensor per tower (the state_dict names each tower's), and a layer
run whole needs them side by side: torch.cat would copy every weight on every forward, and
autograd would keep the copy for backward (AlexNet's two towers: 235 MB whatever the batch).
`pack` puts the shards of a tower-split tensor in one storage, each a view of its rows;
`join` then hands the whole tensor out without a copy, and backward hands each shard its rows
of the gradient, again without a copy. Shards that are not such views (towers on different
devices, tensors swapped in from outside) are joined by torch.cat, as they always can be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def pack(parts: Sequence[Tensor]) -> None:
    """Make `parts` (one tensor per tower, cut along dim 0) rows of one tensor, in place.

    Each keeps its object, values and memory format, so an optimiser holding it stays valid.
    Left alone: one part, parts already rows of one tensor, parts on several devices or of
    several dtypes or trailing shapes (those `join` concatenates).
    """
    first = parts[0]
    if len(parts) < 2 or adjacent(parts) or first.dim() == 0 or any(
            (p.device, p.dtype, p.shape[1:]) != (first.device, first.dtype, first.shape[1:])
            for p in parts):
        return
    with torch.no_grad():
        whole = torch.cat([p.detach() for p in parts])  # ΣC x ... (the parts' memory format)
    lo = 0
    for p in parts:
        p.data = whole[lo:lo + p.shape[0]]  # C/T x ..., a view of its rows
        lo += p.shape[0]


def adjacent(parts: Sequence[Tensor]) -> bool:
    """True when `parts` are consecutive row blocks of one dense tensor (what `pack` makes):
    one storage, equal dtype and strides, each part's rows starting where the last's end.
    False for anything but plain tensors: a tensor subclass or a torch.func transform's
    wrapper has no storage of its own to read."""
    first = parts[0]
    if any(type(p) not in _PLAIN for p in parts) or any(map(_wrapped, parts)):
        return False
    if first.dim() == 0 or first.device.type == "meta" or not _dense(first):
        return False
    storage = first.untyped_storage().data_ptr()
    offset = first.storage_offset()
    for p in parts:
        if (p.dtype != first.dtype or p.device != first.device or p.shape[1:] != first.shape[1:]
                or p.stride() != first.stride() or p.storage_offset() != offset
                or p.untyped_storage().data_ptr() != storage):
            return False
        offset += p.numel()
    return storage != 0


_PLAIN = (Tensor, torch.nn.Parameter)


def _wrapped(t: Tensor) -> bool:
    """Whether `t` is a torch.func (functorch) wrapper, as inside grad or vmap."""
    functorch = getattr(torch._C, "_functorch", None)
    check = getattr(functorch, "is_functorch_wrapped_tensor", None)
    return bool(check(t)) if check is not None else False


def _dense(t: Tensor) -> bool:
    """Rows along dim 0 are consecutive blocks of memory (contiguous or channels_last, with
    dim 0 outermost), so rows of one part followed by the next's are one strided tensor."""
    rows = t.shape[0]
    return rows > 0 and t.stride(0) * rows == t.numel() and (
        t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)))


def join(parts: Sequence[Tensor]) -> Tensor:
    """The tensors of `parts` side by side along dim 0, with autograd to each part.

    Rows of one tensor (`adjacent`) come back as a view of it, no copy; others are
    concatenated, as they are under a torch.func transform. Traced by torch.compile or
    torch.export, the parts are always concatenated:
    dynamo cannot read storage addresses (a graph break), and a trace takes each parameter as
    an input of its own, so a program it makes (a .pt2 loaded elsewhere, say) gets them in
    separate storages, where a view across them would read outside each.
    """
    if len(parts) == 1:
        return parts[0]
    if torch.compiler.is_compiling() or _transformed() or not adjacent(parts):
        return torch.cat(list(parts), 0)  # ΣC x ...
    if not any(p.requires_grad for p in parts):  # running statistics: a plain view will do
        first = parts[0]
        shape = (sum(p.shape[0] for p in parts), *first.shape[1:])
        return first.as_strided(shape, first.stride(), first.storage_offset())  # ΣC x ...
    out: Tensor = _Rows.apply(*parts)  # ΣC x ..., in the parts' storage
    return out


def _transformed() -> bool:
    """Whether a torch.func transform (grad, vmap) is running, which takes an
    autograd.Function only with rules for it that `_Rows` does not have."""
    functorch = getattr(torch._C, "_functorch", None)
    level = getattr(functorch, "maybe_current_level", None)
    return level is not None and level() is not None


class _Rows(torch.autograd.Function):
    """Adjacent row blocks as one tensor; backward gives each its rows of the gradient (views,
    the same numbers torch.cat's backward gives). The parts are saved (no memory: they are the
    layer's own tensors) so that backward fails, as it would for one tensor, when any of them
    was changed in place after forward."""

    @staticmethod
    def forward(ctx: Any, *parts: Tensor) -> Tensor:
        first = parts[0]
        ctx.rows = [p.shape[0] for p in parts]
        ctx.save_for_backward(*parts)
        shape = (sum(ctx.rows), *first.shape[1:])
        return first.as_strided(shape, first.stride(), first.storage_offset())  # ΣC x ...

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:  # ΣC x ...
        ctx.saved_tensors  # noqa: B018 -- unpacking checks the parts' versions
        return tuple(grad.split(ctx.rows, 0))  # T x [C/T x ...], views of grad
