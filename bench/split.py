"""k-core filtering and the leave-one-out split (last = test, second-to-last = validation)."""
from __future__ import annotations

from collections import Counter


def kcore(sequences: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    """Iteratively drop users and items with fewer than k interactions until stable."""
    if k <= 1:
        return {u: list(s) for u, s in sequences.items() if s}
    seqs = {u: list(s) for u, s in sequences.items()}
    while True:
        item_count = Counter(i for s in seqs.values() for i in s)
        changed = False
        nxt = {}
        for u, s in seqs.items():
            kept = [i for i in s if item_count[i] >= k]
            if len(kept) != len(s):
                changed = True
            if len(kept) >= k:
                nxt[u] = kept
            else:
                changed = True
        seqs = nxt
        if not changed:
            return seqs


def leave_one_out(seq: list[int], max_history: int) -> dict[str, tuple[list[int], int]]:
    """History/target pairs for validation and test of one chronological sequence."""
    if len(seq) < 3:
        raise ValueError(f"leave-one-out needs >= 3 interactions, got {len(seq)}")
    return {
        "valid": (seq[:-2][-max_history:], seq[-2]),
        "test": (seq[:-1][-max_history:], seq[-1]),
    }


def train_prefixes(seq: list[int], max_history: int) -> list[tuple[list[int], int]]:
    """Every prefix of the training part (seq[:-2]) -> next item."""
    train = seq[:-2]
    return [(train[max(0, t - max_history):t], train[t]) for t in range(1, len(train))]
