"""The packed training route of the RecBole baselines (and ReaRec): one sample per user window instead of one per
training prefix (RecBole's samples and loss, about 4x fewer seconds per epoch on Beauty), the window batching both
the epoch loop and ``reasonrec bench packed`` use, and the sampled-softmax loss."""
from __future__ import annotations

import numpy as np


def training_windows(sequences, max_history: int) -> list[tuple[list[int], int]]:
    """Training windows with exactly the per-prefix route's supervision: ``(window, first)`` pairs whose
    targets are the window items at positions >= ``first``. A user's first ``max_history + 1`` items form
    one window (every target with its whole history); each later item t gets its own window of the
    ``max_history`` items before it, with its one target (so every target sees its last ``max_history``
    items, as RecBole's per-prefix samples do, and the positions count from that history's first item)."""
    out = []
    for seq in sequences:
        seq = list(seq)
        if len(seq) < 2:
            continue
        out.append((seq[:max_history + 1], 1))
        out += [(seq[t - max_history:t + 1], max_history) for t in range(max_history + 1, len(seq))]
    return out


def window_batches(windows, order, batch_size: int):
    """Windows in ``order``, grouped into batches of about ``batch_size`` targets (a batch closes once it
    reaches that many; the last may be smaller). Yields ``(batch, targets, position after the batch)``."""
    batch, targets = [], 0
    for pos, w in enumerate(order):
        batch.append(windows[w])
        targets += len(windows[w][0]) - windows[w][1]
        if targets >= batch_size or pos == len(order) - 1:
            yield batch, targets, pos + 1
            batch, targets = [], 0


def packed_batch(batch, ours2rb):
    """Right-padded RecBole-id windows, their lengths and first target positions."""
    import torch

    T = max(len(w) for w, _ in batch)
    seq = torch.zeros(len(batch), T, dtype=torch.long)
    for r, (w, _) in enumerate(batch):
        seq[r, :len(w)] = torch.as_tensor(ours2rb[np.asarray(w)])
    return seq, torch.tensor([len(w) for w, _ in batch]), torch.tensor([f for _, f in batch])


def target_mask(lengths, first, width: int):
    """[B, width] True at the input positions of a packed batch whose next item is a target: position t
    (0-based, inputs = a window without its last item) predicts window item t + 1, a target when
    ``first - 1 <= t < length - 1``."""
    import torch

    pos = torch.arange(width, device=lengths.device).unsqueeze(0)
    return (pos < (lengths - 1).unsqueeze(1)) & (pos >= (first - 1).unsqueeze(1))


def sampled_softmax_loss(hidden, targets, item_weight, negatives):
    """Sampled softmax (the eSASRec benchmark's SASRec loss): the CE of each target against itself and
    the ``negatives`` shared by the batch (``hidden`` [T, d], ``targets`` [T] and ``negatives`` [K] item
    ids into ``item_weight`` [n, d]); a negative equal to a row's target (an accidental hit) is masked
    out of that row. With every other item as a negative it is the full-softmax CE (tested)."""
    import torch

    pos = (hidden * item_weight[targets]).sum(-1, keepdim=True)
    neg = (hidden @ item_weight[negatives].T).masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), -torch.inf)
    logits = torch.cat([pos, neg], dim=1)
    return torch.nn.functional.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))


_PACKED: dict = {}


def packed_model_class(base):
    """``base``, a RecBole sequential model whose ``forward(item_seq, item_seq_len)`` is causal and ends in
    ``gather_indexes(output, item_seq_len - 1)`` (SASRec, GRU4Rec), with :meth:`packed_loss`: the same
    forward with the gather skipped (the output at every position), the CE of each target position against
    the catalogue (``item_embedding``), averaged over targets -- RecBole's CE of the same prefixes -- or,
    given ``negatives``, against the target and those items (:func:`sampled_softmax_loss`). The
    weights are ``base``'s: a packed and a per-prefix model load each other's checkpoints."""
    if base not in _PACKED:
        import torch

        class Packed(base):
            _every_position = False

            def gather_indexes(self, output, gather_index):
                return output if self._every_position else super().gather_indexes(output, gather_index)

            def packed_loss(self, windows, lengths, first, negatives=None):
                if self.loss_type != "CE":
                    raise ValueError(f"packed training needs loss_type CE, not {self.loss_type}")
                inputs = windows[:, :-1]
                has_target = target_mask(lengths, first, inputs.shape[1])
                self._every_position = True
                try:
                    out = self.forward(inputs, (lengths - 1).clamp(min=1))
                finally:
                    self._every_position = False
                hidden, targets = out[has_target], windows[:, 1:][has_target]
                if negatives is not None:
                    return sampled_softmax_loss(hidden, targets, self.item_embedding.weight, negatives)
                logits = hidden @ self.item_embedding.weight.T
                return torch.nn.functional.cross_entropy(logits, targets)

        Packed.__name__ = Packed.__qualname__ = base.__name__  # RecBole reads the model's defaults by this name
        _PACKED[base] = Packed
    return _PACKED[base]
