"""The RecBole route's settings (:mod:`bench.recbole_route`): :class:`RecBoleConfig`, what every RecBole row
trains with (epochs, patience, batch sizes, learning rate, time budget, packed training), and
:class:`TransformerConfig`, the SASRec-style encoder's settings that SASRec and ReaRec share, with
:func:`transformer_params`, their RecBole names."""
from __future__ import annotations

from pydantic import Field, model_validator

from bench.method import MethodConfig


class RecBoleConfig(MethodConfig):
    epochs: int = Field(50, ge=1)
    patience: int = Field(5, ge=1, description="epochs without validation improvement before stopping")
    batch_size: int = Field(2048, ge=1)
    eval_batch_size: int = Field(4096, ge=1, description="users per ranking batch (validation and test)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_minutes: float | None = Field(None, gt=0, description="stop training after this many minutes")
    packed: bool = Field(False, description="train on user windows, every prefix's target scored in one causal pass "
                                            "(the same samples and loss as RecBole's one sample per prefix, tested; "
                                            "fewer encoder passes); false = RecBole's trainer and dataloader")


class TransformerConfig(RecBoleConfig):
    """The SASRec-style encoder's settings (RecBole's names in :func:`transformer_params`)."""
    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    dropout: float = Field(0.5, ge=0, lt=1)
    attn_dropout: float = Field(0.5, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads(self):
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}")
        return self


def transformer_params(c: TransformerConfig) -> dict:
    return {"hidden_size": c.hidden_size, "n_layers": c.n_layers, "n_heads": c.n_heads, "inner_size": c.inner_size,
            "hidden_dropout_prob": c.dropout, "attn_dropout_prob": c.attn_dropout, "hidden_act": "gelu",
            "layer_norm_eps": 1e-12, "initializer_range": 0.02}
