"""The LASAR paper's published figures, shipped with the package as a small typed table
(``bench/published_lasar.json``, typed out from the paper; ``shared/paper/published.json`` was its
source). The leaderboard and ``python -m bench.compare`` show them as reference rows beside ours;
nothing at run time reads the paper's files.

Row names are the paper's; :data:`PAPER_NAMES` maps our method names to them."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

FILE = Path(__file__).with_name("published_lasar.json")

# our method names -> the paper's Table 1 / Table 4 row names
PAPER_NAMES = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "minionerec": "MiniOneRec", "lcrec": "LC-Rec",
               "rearec": "ReaRec", "gream": "Explicit CoT (GREAM)", "lasar": "LASAR"}

Metrics = dict[str, float]


class LatencyRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds_per_sample: float
    total: str


class SegmentRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prop: float
    hist_len: float
    cat_div: float


class DatasetSize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: int
    items: int


class Published(BaseModel):
    """Every figure the benchmark compares with: Table 1 (dataset -> row -> metric), Table 4 (dataset ->
    row -> latency), the Beauty ablations (Tables 2, 3), the alignment ablation on Sports and Instruments
    (Table 9), Fig. 4a (Sports HR@10, adaptive vs N = 4), the CoT segment statistics (Table 8, Sports),
    the RL step dynamics (Sports) and the dataset sizes (Table 6)."""
    model_config = ConfigDict(extra="forbid")
    source: str
    table1_main: dict[str, dict[str, Metrics]]
    table4_latency: dict[str, dict[str, LatencyRow]]
    table2_sft_ablation_beauty: dict[str, Metrics]
    table3_rl_ablation_beauty: dict[str, dict[str, float | None]]
    table9_alignment_ablation: dict[str, dict[str, Metrics]]
    figure4a_force_n_sports_hr10: dict[str, float]
    table8_cot_segments_sports: dict[str, SegmentRow]
    rl_dynamics_sports: dict[str, float]
    table6_datasets: dict[str, DatasetSize]

    def section(self, key: str) -> dict:
        """A table by its key, as plain dicts (``{}`` for an unknown key)."""
        value = getattr(self, key, None) if key in type(self).model_fields else None
        if value is None:
            return {}
        return json.loads(json.dumps(value, default=lambda m: m.model_dump()))


@functools.lru_cache(maxsize=None)
def published(path: str | None = None) -> Published:
    """The shipped table, or another file of the same shape (``path``), validated."""
    p = Path(path) if path else FILE
    try:
        return Published.model_validate_json(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"published figures not found: {p}") from None
