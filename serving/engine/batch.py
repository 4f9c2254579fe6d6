"""The running batch's tensors: a left-padded KV cache that rows can join and leave.

This is TGI's "padded" causal-LM design on a transformers `DynamicCache`:
- new sequences are prefilled together, left-padded, with `position_ids = cumsum(mask) - 1`, so
  each row sees exactly the positions and keys it would see alone;
- every row shares one column index per step, so a decode step is one ordinary forward pass.

The cache lives in preallocated buffers (`[rows, heads, columns, head_dim]` per layer) that the
model reads through views, instead of transformers' `DynamicLayer`, which concatenates the whole
cache at every step (a copy of all of it per token, quadratic in the length). With buffers:
- a decode step writes one column in place;
- a finished row is removed by moving the last row into its place (one row copied, not the batch),
  and columns that became padding for every remaining row are dropped from the view;
- joining rows are written into spare rows, right-aligned to the shared last column.
Buffers are sized from the same worst case the scheduler's token budget reserves (rows x (width +
remaining steps)), and are reallocated smaller when rows leave, so KV memory stays within the
budget and shrinks when long sequences finish.

The model itself always runs through transformers; only the cache storage is ours.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class SlotLayer(DynamicLayer):
    """One layer's keys/values: a buffer plus the live window `[:rows, :, start:end]`."""

    def __init__(self, rows_capacity: int = 0, reserve_columns: int = 0) -> None:
        super().__init__()
        self.rows_capacity = rows_capacity
        self.reserve_columns = reserve_columns
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None
        self.rows = 0
        self.start = 0
        self.end = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        count = key_states.shape[-2]
        if self.key_buffer is None:
            self._allocate_for(key_states, count)
        assert self.key_buffer is not None and self.value_buffer is not None
        if self.end + count > self.key_buffer.shape[2]:
            raise RuntimeError("KV buffer full: the batch must reserve columns before the forward pass")
        self.key_buffer[: self.rows, :, self.end : self.end + count] = key_states
        self.value_buffer[: self.rows, :, self.end : self.end + count] = value_states
        self.end += count
        return self.refresh()

    def _allocate_for(self, key_states: torch.Tensor, count: int) -> None:
        rows, heads, _, dim = key_states.shape
        shape = (max(rows, self.rows_capacity), heads, count + self.reserve_columns, dim)
        # Uninitialised: every column is written before the live window reaches it.
        self.key_buffer = key_states.new_empty(shape)
        self.value_buffer = key_states.new_empty(shape)
        self.rows, self.start, self.end = rows, 0, 0

    def refresh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Point `keys`/`values` (what transformers reads) at the live window, and return them."""
        assert self.key_buffer is not None and self.value_buffer is not None
        keys = self.key_buffer[: self.rows, :, self.start : self.end]
        values = self.value_buffer[: self.rows, :, self.start : self.end]
        self.keys, self.values = keys, values
        return keys, values

    @property
    def buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.key_buffer is not None and self.value_buffer is not None
        return self.key_buffer, self.value_buffer


@dataclass
class PaddedBatch:
    cache: DynamicCache
    mask_buffer: torch.Tensor  # [rows capacity, columns capacity] long, 0 on padding
    position_buffer: torch.Tensor  # [rows capacity] position of each row's next input token
    next_id_buffer: torch.Tensor  # [rows capacity] the token each row feeds at the next step
    rows: int
    start: int
    end: int
    max_tokens: int  # the token budget: buffers never grow past it for headroom's sake

    @property
    def size(self) -> int:
        return self.rows

    @property
    def length(self) -> int:
        """Live padded length of the cache (the same for every row)."""
        return self.end - self.start

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.mask_buffer[: self.rows, self.start : self.end]

    @property
    def positions(self) -> torch.Tensor:
        return self.position_buffer[: self.rows]

    @property
    def next_ids(self) -> torch.Tensor:
        return self.next_id_buffer[: self.rows]

    def set_next_ids(self, ids: torch.Tensor) -> None:
        self.next_id_buffer[: self.rows] = ids

    @property
    def layers(self) -> list[SlotLayer]:
        return slot_layers(self.cache)

    @property
    def rows_capacity(self) -> int:
        return int(self.mask_buffer.shape[0])

    @property
    def columns_capacity(self) -> int:
        return int(self.mask_buffer.shape[1])

    @property
    def kv_bytes(self) -> int:
        return sum(int(b.numel() * b.element_size()) for layer in self.layers for b in layer.buffers)

    def sync_layers(self) -> None:
        for layer in self.layers:
            layer.rows, layer.start, layer.end = self.rows, self.start, self.end
            layer.refresh()


def slot_layers(cache: DynamicCache) -> list[SlotLayer]:
    layers = []
    for layer in cache.layers:
        if not isinstance(layer, SlotLayer) or layer.key_buffer is None:
            raise TypeError(f"unsupported cache layer {type(layer).__name__}")
        layers.append(layer)
    return layers


def prefill(
    model: Any,
    prompts: list[tuple[int, ...]],
    *,
    reserve: int = 0,
    max_tokens: int = 16000,
    full_logits: bool = False,
) -> tuple[PaddedBatch, torch.Tensor]:
    """Run the prompts as one left-padded forward pass, leaving `reserve` spare columns.

    Returns the batch (next ids still zero) and the logits: `[batch, vocab]` for the last
    position, or `[batch, seq, vocab]` when `full_logits` (prompt logprobs) is asked for.
    """
    device = model.device
    rows, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.zeros((rows, width), dtype=torch.long)
    mask = torch.zeros((rows, width + reserve), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) : width] = 1
    ids, mask = ids.to(device), mask.to(device)
    live_mask = mask[:, :width]
    cache = DynamicCache()
    # transformers creates one layer per model layer from this factory, on the first forward pass.
    factory: Any = functools.partial(SlotLayer, rows_capacity=rows, reserve_columns=reserve)
    cache.layer_class_to_replicate = factory
    out = model(
        input_ids=ids,
        attention_mask=live_mask,
        position_ids=(live_mask.cumsum(dim=-1) - 1).clamp(min=0),
        cache=cache,
        use_cache=True,
        logits_to_keep=0 if full_logits else 1,
    )
    positions = live_mask.sum(dim=-1)
    batch = PaddedBatch(cache, mask, positions, torch.zeros_like(positions), rows, 0, width, max_tokens)
    _zero_padding(batch)
    logits = out.logits if full_logits else out.logits[:, -1, :]
    return batch, logits


def decode(model: Any, batch: PaddedBatch, *, prebuilt_mask: bool = False) -> torch.Tensor:
    """One step for every row; returns `[batch, vocab]` logits and grows the batch by one column.

    With `prebuilt_mask` the 4-D mask SDPA wants is passed directly (for one query token it is
    just the padding mask), which transformers accepts as-is instead of rebuilding it every step.
    Only valid for full-attention SDPA models: see `supports_prebuilt_mask`.
    """
    if batch.end + 1 > batch.columns_capacity:
        _reallocate(
            batch, batch.rows_capacity, _columns_with_headroom(batch, batch.length + 1, batch.rows_capacity)
        )
    batch.mask_buffer[: batch.rows, batch.end] = 1
    mask = batch.mask_buffer[: batch.rows, batch.start : batch.end + 1]
    out = model(
        input_ids=batch.next_ids[:, None],
        attention_mask=mask[:, None, None, :].bool() if prebuilt_mask else mask,
        position_ids=batch.positions[:, None],
        cache=batch.cache,
        use_cache=True,
    )
    batch.end += 1
    batch.position_buffer[: batch.rows] += 1
    return out.logits[:, -1, :]


def supports_prebuilt_mask(model: Any) -> bool:
    """True when a decode step's attention mask is exactly the padding mask.

    That holds for SDPA with full attention in every layer; sliding-window layers (Mistral,
    some Qwen2 and Gemma configurations) need transformers to build their windowed masks.
    """
    config = model.config
    layer_types = getattr(config, "layer_types", None) or []
    return (
        getattr(config, "_attn_implementation", None) == "sdpa"
        and getattr(config, "sliding_window", None) is None
        and all(kind == "full_attention" for kind in layer_types)
    )


def concatenate(batch: PaddedBatch, new: PaddedBatch, *, reserve: int) -> None:
    """Append `new`'s rows to `batch` (in place), right-aligned to the shared last column.

    `reserve` is the most decode steps any row may still take. When the buffers are too small
    they are reallocated with spare rows and columns (within the token budget), so that most
    joins only write the new rows.
    """
    width = max(batch.length, new.length)
    rows = batch.rows + new.rows
    if batch.end - width < 0 or rows > batch.rows_capacity or batch.end + reserve > batch.columns_capacity:
        need = width + reserve
        capacity_rows = max(rows, min(rows + _spare_rows(rows), batch.max_tokens // max(need, 1)))
        _reallocate(batch, capacity_rows, _columns_with_headroom(batch, need, capacity_rows), width=width)
    elif batch.length < width:
        _widen_in_place(batch, width)
    _write_rows(batch, new)


def select(batch: PaddedBatch, keep: list[int], *, reserve: int) -> list[int]:
    """Keep only the rows in `keep`; returns, for each new row, its index before the call.

    Removed rows are filled by moving the last row into their place, so the cost is one row per
    removal. Columns that became padding for all remaining rows leave the live window, and the
    buffers are reallocated when they have become more than twice what the rows still need.
    """
    order = list(range(batch.rows))
    kept = set(keep)
    for row in sorted(set(order) - kept, reverse=True):
        last = batch.rows - 1
        if row != last:
            _move_row(batch, last, row)
            order[row] = order[last]
        batch.rows -= 1
    order = order[: batch.rows]
    _trim_leading_padding(batch)
    # Shrink when the buffers hold over four times what the rows need with the headroom a
    # reallocation would add anyway (2x columns, spare rows), so leaves and joins do not
    # reallocate back and forth.
    rows = batch.rows + _spare_rows(batch.rows)
    needed = rows * (batch.length + reserve)
    if batch.rows and batch.rows_capacity * batch.columns_capacity > 4 * needed:
        _reallocate(batch, rows, _columns_with_headroom(batch, batch.length + reserve, rows))
    batch.sync_layers()
    return order


def _columns_with_headroom(batch: PaddedBatch, need: int, rows_capacity: int) -> int:
    """Twice the columns needed (later joins bring rows with more steps to go), within budget."""
    return max(need, min(2 * need, batch.max_tokens // max(rows_capacity, 1)))


def _spare_rows(rows: int) -> int:
    """Room for later joins without copying the batch again."""
    return max(1, rows // 4)


def _move_row(batch: PaddedBatch, source: int, target: int) -> None:
    s, e = batch.start, batch.end
    for layer in batch.layers:
        for buffer in layer.buffers:
            buffer[target, :, s:e] = buffer[source, :, s:e]
    batch.mask_buffer[target, s:e] = batch.mask_buffer[source, s:e]
    batch.position_buffer[target] = batch.position_buffer[source]
    batch.next_id_buffer[target] = batch.next_id_buffer[source]


def _trim_leading_padding(batch: PaddedBatch) -> None:
    live = batch.attention_mask.any(dim=0).nonzero()
    batch.start += int(live[0]) if live.numel() else batch.length


def _widen_in_place(batch: PaddedBatch, width: int) -> None:
    """Open `width - length` more columns on the left; they are padding for the existing rows."""
    new_start = batch.end - width
    for layer in batch.layers:
        for buffer in layer.buffers:
            buffer[: batch.rows, :, new_start : batch.start] = 0
    batch.mask_buffer[: batch.rows, new_start : batch.start] = 0
    batch.start = new_start


def _write_rows(batch: PaddedBatch, new: PaddedBatch) -> None:
    first, count = batch.rows, new.rows
    split = batch.end - new.length  # new rows' columns start here; before that is padding
    for layer, source in zip(batch.layers, new.layers, strict=True):
        for buffer, data in zip(layer.buffers, source.refresh(), strict=True):
            buffer[first : first + count, :, batch.start : split] = 0
            buffer[first : first + count, :, split : batch.end] = data
    batch.mask_buffer[first : first + count, batch.start : split] = 0
    batch.mask_buffer[first : first + count, split : batch.end] = new.attention_mask
    batch.position_buffer[first : first + count] = new.positions
    batch.next_id_buffer[first : first + count] = new.next_ids
    batch.rows += count
    batch.sync_layers()


def _reallocate(
    batch: PaddedBatch, rows_capacity: int, columns_capacity: int, width: int | None = None
) -> None:
    """New buffers; the live window is copied so that it ends at column `width` (default: its length)."""
    width = batch.length if width is None else width
    offset = width - batch.length  # extra padding columns opened on the left
    columns_capacity = max(columns_capacity, width + 1)
    s, e, rows = batch.start, batch.end, batch.rows
    for layer in batch.layers:
        keys, values = layer.buffers
        shape = (rows_capacity, keys.shape[1], columns_capacity, keys.shape[3])
        # Uninitialised, not zeroed: zeroing the whole capacity costs more than the copy. Only the
        # live window is ever read, and its padding part is zeroed here or when rows are written.
        new_keys, new_values = keys.new_empty(shape), values.new_empty(shape)
        for new, old in ((new_keys, keys), (new_values, values)):
            new[:rows, :, :offset] = 0
            new[:rows, :, offset:width] = old[:rows, :, s:e]
        layer.key_buffer, layer.value_buffer = new_keys, new_values
    mask = batch.mask_buffer.new_zeros((rows_capacity, columns_capacity))
    mask[:rows, offset:width] = batch.mask_buffer[:rows, s:e]
    positions = batch.position_buffer.new_zeros(rows_capacity)
    positions[:rows] = batch.position_buffer[:rows]
    next_ids = batch.next_id_buffer.new_zeros(rows_capacity)
    next_ids[:rows] = batch.next_id_buffer[:rows]
    batch.mask_buffer, batch.position_buffer, batch.next_id_buffer = mask, positions, next_ids
    batch.start, batch.end = 0, width
    batch.sync_layers()


def _zero_padding(batch: PaddedBatch) -> None:
    # Keys/values computed at padding positions are never attended to, but a NaN there would
    # still poison the attention output (0 * NaN = NaN), so they are set to exact zeros.
    pad = (batch.attention_mask == 0)[:, None, :, None]
    if not bool(pad.any()):
        return
    for layer in batch.layers:
        for buffer in layer.buffers:
            window = buffer[: batch.rows, :, batch.start : batch.end]
            window.masked_fill_(pad, 0.0)
