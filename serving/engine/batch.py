"""The running batch's tensors: a left-padded KV cache that rows can join and leave.

This is TGI's "padded" causal-LM design on a transformers `DynamicCache`:
- new sequences are prefilled together, left-padded, with `position_ids = cumsum(mask) - 1`, so
  each row sees exactly the positions and keys it would see alone;
- joining = left-pad every layer's keys/values to a common length, then concatenate on the batch
  dimension; leaving = select the kept rows, then cut the columns that became padding for every
  remaining row, which is what keeps memory proportional to the live tokens.

The cache tensors are manipulated directly (`layer.keys` / `layer.values`, `[batch, heads, seq,
head_dim]`); the model itself always runs through transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, cast

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer


@dataclass
class PaddedBatch:
    cache: DynamicCache
    attention_mask: torch.Tensor  # [batch, seq] long, 0 on left padding
    positions: torch.Tensor  # [batch] position of the next input token
    next_ids: torch.Tensor  # [batch] the token to feed at the next decode step

    @property
    def size(self) -> int:
        return int(self.attention_mask.shape[0])

    @property
    def length(self) -> int:
        """Padded sequence length of the cache (the same for every row)."""
        return int(self.attention_mask.shape[1])


def prefill(
    model: PreTrainedModel, prompts: list[tuple[int, ...]], full_logits: bool = False
) -> tuple[PaddedBatch, torch.Tensor]:
    """Run the prompts as one left-padded forward pass.

    Returns the batch (with `next_ids` still unset: zeros) and the logits, `[batch, vocab]` for the
    last position, or `[batch, seq, vocab]` when `full_logits` (prompt logprobs) is asked for.
    """
    device = model.device
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    position_ids = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
        logits_to_keep=0 if full_logits else 1,
    )
    _zero_padding(cache, mask)
    positions = mask.sum(dim=-1)
    batch = PaddedBatch(cache, mask, positions, torch.zeros_like(positions))
    logits = out.logits if full_logits else out.logits[:, -1, :]
    return batch, logits


def decode(model: PreTrainedModel, batch: PaddedBatch) -> torch.Tensor:
    """One step for every row; returns `[batch, vocab]` logits and grows the batch by one column."""
    ones = torch.ones((batch.size, 1), dtype=batch.attention_mask.dtype, device=batch.attention_mask.device)
    batch.attention_mask = torch.cat([batch.attention_mask, ones], dim=1)
    out = model(
        input_ids=batch.next_ids[:, None],
        attention_mask=batch.attention_mask,
        position_ids=batch.positions[:, None],
        cache=batch.cache,
        use_cache=True,
    )
    batch.positions = batch.positions + 1
    return out.logits[:, -1, :]


def concatenate(left: PaddedBatch, right: PaddedBatch) -> PaddedBatch:
    """Merge two batches into one, left-padding the shorter one's cache and mask."""
    width = max(left.length, right.length)
    cache = DynamicCache()
    for layer_idx, (a, b) in enumerate(zip(kv_layers(left.cache), kv_layers(right.cache), strict=True)):
        keys = torch.cat([_left_pad(a.keys, width), _left_pad(b.keys, width)], dim=0)
        values = torch.cat([_left_pad(a.values, width), _left_pad(b.values, width)], dim=0)
        cache.update(keys, values, layer_idx)
    mask = torch.cat(
        [_left_pad_mask(left.attention_mask, width), _left_pad_mask(right.attention_mask, width)]
    )
    return PaddedBatch(
        cache=cache,
        attention_mask=mask,
        positions=torch.cat([left.positions, right.positions]),
        next_ids=torch.cat([left.next_ids, right.next_ids]),
    )


def select(batch: PaddedBatch, keep: list[int]) -> PaddedBatch:
    """Keep only the rows in `keep` and drop columns that are padding for all of them."""
    index = torch.tensor(keep, dtype=torch.long, device=batch.attention_mask.device)
    mask = batch.attention_mask.index_select(0, index)
    # Leading columns where every kept row is padding carry no information; cutting them is
    # what frees the memory of long sequences that have left.
    live_columns = mask.any(dim=0).nonzero()
    start = int(live_columns[0]) if live_columns.numel() else mask.shape[1]
    for layer in kv_layers(batch.cache):
        layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
        layer.values = layer.values.index_select(0, index)[:, :, start:, :]
    return PaddedBatch(
        cache=batch.cache,
        attention_mask=mask[:, start:],
        positions=batch.positions.index_select(0, index),
        next_ids=batch.next_ids.index_select(0, index),
    )


class KVLayer(Protocol):
    keys: torch.Tensor
    values: torch.Tensor


def kv_layers(cache: DynamicCache) -> list[KVLayer]:
    """The cache's layers as plain key/value holders.

    A `DynamicCache()` built without a config holds only full-attention `DynamicLayer`s, whose
    tensors exist once the first forward pass has run; this checks both before the tensors are
    edited in place.
    """
    layers = []
    for layer in cache.layers:
        if not isinstance(layer, DynamicLayer) or layer.keys is None or layer.values is None:
            raise TypeError(f"unsupported cache layer {type(layer).__name__}")
        layers.append(cast(KVLayer, layer))
    return layers


def _zero_padding(cache: DynamicCache, mask: torch.Tensor) -> None:
    # Keys/values computed at padding positions are never attended to, but a NaN there would
    # still poison the attention output (0 * NaN = NaN), so they are set to exact zeros.
    pad = (mask == 0)[:, None, :, None]
    if not bool(pad.any()):
        return
    for layer in kv_layers(cache):
        layer.keys = layer.keys.masked_fill(pad, 0.0)
        layer.values = layer.values.masked_fill(pad, 0.0)


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.shape[2]
    if missing == 0:
        return tensor
    return torch.nn.functional.pad(tensor, (0, 0, missing, 0))


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return mask if missing == 0 else torch.nn.functional.pad(mask, (missing, 0))
