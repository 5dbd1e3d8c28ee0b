"""The metadata teacher's chain on a catalog without item text or without any category (``ItemFacts.chain``
"clusters", :mod:`bench.generative.teacher`): the App. E.2 stages written from the history's SID-prefix clusters,
each kind named by its rank and count only and every number in words (:func:`_words`), so the text names no SID
code, the target's or any other."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.generative.teacher import ItemFacts


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def _words(n: int) -> str:
    """A count in words: the text-free chain writes no digit, so no SID code can slip into it."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10 - 2] + (f"-{_ONES[n % 10]}" if n % 10 else "")
    return "over a hundred"


def _plural(n: int, word: str) -> str:
    return f"{_words(n)} {word}{'' if n == 1 else 's'}"


def cluster_cot(facts: ItemFacts, history: list[int], target: int) -> str:
    """The metadata teacher on a catalog without item text: the App. E.2 chain from the history's SID-prefix
    clusters ("kinds": the first code; "subgroups": the first two). A kind is named by its rank and count
    only and every number is written in words, so the text holds no SID code, the target's or any other.
    Each sentence reads a different piece of evidence (size, streak, reorders, concentration, spread,
    subgroups, the target's relation to them) in its own words, so sentences tend to fall into separate
    segments and their number follows the evidence."""
    h = list(history)
    n = len(h)
    kind = [facts.codes[i][0] for i in h]
    sub = [facts.codes[i][:2] for i in h]
    count = Counter(kind)
    ranked = [k for k, _ in count.most_common()]
    t_kind, t_sub = facts.codes[target][0], facts.codes[target][:2]
    s: list[str] = []
    # 1. behavioural evidence
    s.append("The history holds a single purchase so far." if n == 1 else
             f"The history holds {_words(n)} purchases, all of one kind." if len(count) == 1 else
             f"The history holds {_words(n)} purchases spread over {_words(len(count))} kinds of items.")
    if n >= 2:
        run = next((r for r in range(1, n) if kind[-1 - r] != kind[-1]), n)
        s.append(f"The latest {_words(run)} purchases came in a row from one kind, a streak still going." if run >= 2
                 else "Most recently the shopper switched away from the kind bought just before.")
    again = sum(c > 1 for c in Counter(h).values())
    if again:
        s.append(f"Reorders happen: {_plural(again, 'item')} came back more than once.")
    # 2. latent preferences
    top = count[ranked[0]]
    if len(count) == 1:
        s.append("Every pick shares a single kind, a narrow and focused taste." if n >= 2 else
                 "One purchase alone says little about their taste.")
    elif top == 1:
        s.append("No kind dominates yet: each item belongs to a different one.")
    else:
        s.append(f"Their favourite kind accounts for {_words(top)} of the {_words(n)} items.")
    if len(count) >= 3 and top >= 2:
        once = sum(c == 1 for c in count.values())
        s.append(f"Curiosity is broad as well: {_plural(once, 'kind')} showed up only once.")
    if len(facts.codes[target]) >= 2 and top >= 2:
        subs = len({sub[j] for j in range(n) if kind[j] == ranked[0]})
        s.append(f"Inside that dominant kind the choices fall into {_plural(subs, 'finer subgroup')}.")
    # 3. intent and goal (the target's relation to the history's kinds, never its code)
    if t_kind not in count:
        s.append("The next need looks new, a kind absent from the history." if len(count) == 1 else
                 f"The next need looks new, a kind absent from all {_words(len(count))} seen so far.")
    elif len(count) == 1:
        s.append("The next need stays with that one kind.")
    elif t_kind == ranked[0] and top >= 2:
        s.append("The next need continues the most frequent kind.")
    elif t_kind == kind[-1]:
        s.append("The next need stays with the kind of the latest purchase.")
    else:
        times = "once" if count[t_kind] == 1 else f"{_words(count[t_kind])} times"
        s.append(f"The next need returns to an earlier kind, bought {times} before.")
    # 4. recommendation formulation
    if target in h:
        s.append("So a repurchase of something already owned is the natural recommendation.")
    elif len(t_sub) >= 2 and t_sub in set(sub):
        s.append("So a close sibling of earlier picks, from the very same subgroup, is the natural recommendation.")
    elif t_kind in count:
        s.append("So an unexplored subgroup of that familiar kind is the natural recommendation.")
    else:
        s.append("So an exploratory pick outside the familiar kinds is the natural recommendation.")
    # 5. denoised sequence rewriting
    if n >= 4:
        keep = min(count[t_kind], 3)
        s.append(f"Filtering out the noise leaves the last {_plural(keep, 'relevant step')} as the trail to follow."
                 if keep else "Filtering out the noise leaves only the two most recent steps as the trail to follow.")
    return " ".join(s)
