"""SASRec and GRU4Rec through RecBole's real model classes and trainer (the route: :mod:`bench.recbole_route`)."""
from __future__ import annotations

from pydantic import Field

from bench.method import MethodInfo
from bench.recbole_route import RecBoleConfig, RecBoleMethod, TransformerConfig, transformer_params
from bench.registry import register


@register()
class SASRec(RecBoleMethod):
    info = MethodInfo(name="sasrec", family="traditional", paper="Kang & McAuley, ICDM 2018",
                      description="RecBole SASRec, full-softmax CE")
    recbole_model = "SASRec"

    class Config(TransformerConfig):
        pass

    def model_params(self):
        return transformer_params(self.config)


@register()
class GRU4Rec(RecBoleMethod):
    info = MethodInfo(name="gru4rec", family="traditional", paper="Hidasi et al., ICLR 2016",
                      description="RecBole GRU4Rec, full-softmax CE")
    recbole_model = "GRU4Rec"

    class Config(RecBoleConfig):
        embedding_size: int = 64
        hidden_size: int = 128
        num_layers: int = 1
        dropout: float = Field(0.3, ge=0, lt=1)

    def model_params(self):
        c = self.config
        return {"embedding_size": c.embedding_size, "hidden_size": c.hidden_size, "num_layers": c.num_layers,
                "dropout_prob": c.dropout}
