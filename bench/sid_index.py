"""A dataset's precomputed SID index (``sids.source=precomputed``) checked against the items its interactions
use, before :func:`bench.data.build` takes its codes: every item has a parsable SID, all with one level count,
and that count agrees with ``sids.levels`` where the card or the data overrides chose it."""
from __future__ import annotations

from collections import Counter

from bench import loaders, sids as sidlib
from bench.specs import DataSettings, DatasetCard, SIDSettings


def _levels_set_explicitly(card: DatasetCard, settings: DataSettings, overrides: dict | None) -> bool:
    """Whether ``sids.levels`` was chosen rather than defaulted: the card's YAML names it, the settings
    differ from the card's value, or the data overrides name it. ``settings`` alone cannot tell (they
    are built from the card's full dump, so every field counts as set), and fully resolved overrides
    (every field, what the runner passes) name every field: those count only where they differ from
    the card. So ``levels`` equal to the default of a card that leaves it unset, passed inside a
    fully resolved spec, is not caught (it cannot be told from the default)."""
    if "levels" in card.data.sids.model_fields_set or settings.sids.levels != card.data.sids.levels:
        return True
    sids = (overrides or {}).get("sids")
    return isinstance(sids, dict) and "levels" in sids and not _fully_resolved(overrides)


def _fully_resolved(overrides: dict) -> bool:
    """Overrides that spell out every data setting (a resolved spec's ``data``), not a user's choice."""
    sids = overrides.get("sids")
    return (set(overrides) >= set(DataSettings.model_fields) and isinstance(sids, dict)
            and set(sids) >= set(SIDSettings.model_fields))


def check_index(card: DatasetCard, settings: DataSettings, raw: loaders.RawData,
                overrides: dict | None = None) -> dict[str, list[int]]:
    """With ``sids.source=precomputed``: the index's codes for every item of ``raw.sequences``.
    A DataError names the index file and the item (missing, unparsable, other level count) or the
    level counts when ``sids.levels`` was set explicitly (see :func:`_levels_set_explicitly`) and
    differs from the index's."""
    index = raw.sid_index()
    if index is None:
        raise loaders.DataError(f"dataset '{card.name}': sids.source=precomputed but there is no index file")
    where = str(raw.index_file) if raw.index_file else f"dataset '{card.name}': index"
    used = sorted({i for seq in raw.sequences.values() for i in seq}, key=lambda i: (len(i), i))
    missing = raw.index_missing_items or [i for i in used if i not in index]
    if missing:
        used_in = raw.source_files[0].name if raw.source_files else "the interactions"
        raise loaders.DataError(f"{where}: no SID for item id {missing[0]!r} used in {used_in} "
                                f"({len(missing)} items missing); sids.source=rqkmeans computes SIDs instead")
    codes = {}
    for i in used:
        try:
            codes[i] = sidlib.parse_sid(index[i], f"{where}: item {i!r}")
        except ValueError as e:
            raise loaders.DataError(str(e)) from None
    n_levels = Counter(len(c) for c in codes.values()).most_common(1)[0][0]
    odd = next((i for i, c in codes.items() if len(c) != n_levels), None)
    if odd is not None:
        raise loaders.DataError(f"{where}: item {odd!r}: {len(codes[odd])} levels, other items have {n_levels}")
    if settings.sids.levels != n_levels and _levels_set_explicitly(card, settings, overrides):
        raise loaders.DataError(f"{where}: the index has {n_levels} levels but sids.levels={settings.sids.levels} "
                                f"(set by the dataset card '{card.name}' or the data overrides); "
                                f"set sids.levels={n_levels} or leave it unset")
    return codes
