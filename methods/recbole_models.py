"""SASRec and GRU4Rec through RecBole's real model classes and trainer (the route: :mod:`bench.recbole_route`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bench.method import MethodInfo
from bench.packed import packed_model_class
from bench.recbole_config import RecBoleConfig, TransformerConfig, transformer_params
from bench.recbole_route import RecBoleMethod
from bench.registry import register


class _LossConfig(RecBoleConfig):
    loss: Literal["ce", "sampled_softmax"] = Field(
        "ce", description="ce: full-softmax CE over the catalogue (RecBole's); sampled_softmax: CE against the "
                          "target and n_negatives uniform items shared by the batch (needs packed: true)")
    n_negatives: int = Field(256, ge=1, description="sampled_softmax: negatives per batch")

    @model_validator(mode="after")
    def _loss_needs_packed(self):
        if self.loss == "sampled_softmax" and not self.packed:
            raise ValueError("loss: sampled_softmax is a packed-route loss; set packed: true "
                             "(RecBole's trainer offers CE and BPR only)")
        return self


class _Builtin(RecBoleMethod):
    """A RecBole built-in model; with ``packed: true`` its subclass that scores every window position
    (:func:`bench.packed.packed_model_class`), trained with full-softmax CE or sampled softmax."""
    builtin = ""
    #: added after the Beauty rows were committed; at these values, as before them (left out of run ids)
    late_settings = {"packed": False, "loss": "ce", "n_negatives": 256}

    @property
    def recbole_model(self):
        if not self.config.packed:
            return self.builtin
        from recbole.utils import get_model

        return packed_model_class(get_model(self.builtin))

    def packed_loss(self, model, windows, lengths, first):
        if self.config.loss == "ce":
            return model.packed_loss(windows, lengths, first)
        import torch

        # uniform over the catalogue (RecBole ids 1..n-1; 0 is padding), from the torch generator that a
        # checkpoint saves and a resumed run restores
        negatives = torch.randint(1, model.n_items, (self.config.n_negatives,), device=windows.device)
        return model.packed_loss(windows, lengths, first, negatives=negatives)

    def describe(self):
        c = self.config
        loss = "full-softmax CE" if c.loss == "ce" else f"sampled softmax, {c.n_negatives} negatives per batch"
        return {**super().describe(), "loss": loss}


@register()
class SASRec(_Builtin):
    info = MethodInfo(name="sasrec", family="traditional", paper="Kang & McAuley, ICDM 2018",
                      description="RecBole SASRec, full-softmax CE")
    builtin = "SASRec"

    class Config(TransformerConfig, _LossConfig):
        pass

    def model_params(self):
        return transformer_params(self.config)


@register()
class GRU4Rec(_Builtin):
    info = MethodInfo(name="gru4rec", family="traditional", paper="Hidasi et al., ICLR 2016",
                      description="RecBole GRU4Rec, full-softmax CE")
    builtin = "GRU4Rec"

    class Config(_LossConfig):
        embedding_size: int = 64
        hidden_size: int = 128
        num_layers: int = 1
        dropout: float = Field(0.3, ge=0, lt=1)

    def model_params(self):
        c = self.config
        return {"embedding_size": c.embedding_size, "hidden_size": c.hidden_size, "num_layers": c.num_layers,
                "dropout_prob": c.dropout}
