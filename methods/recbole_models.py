"""SASRec and GRU4Rec through RecBole's real model classes and trainer (the route: :mod:`bench.recbole_route`)."""
from __future__ import annotations

from pydantic import Field

from bench.method import MethodInfo
from bench.recbole_route import RecBoleConfig, RecBoleMethod, TransformerConfig, packed_model_class, transformer_params
from bench.registry import register


class _Builtin(RecBoleMethod):
    """A RecBole built-in model; with ``packed: true`` its subclass that scores every window position
    (:func:`bench.recbole_route.packed_model_class`)."""
    builtin = ""

    @property
    def recbole_model(self):
        if not self.config.packed:
            return self.builtin
        from recbole.utils import get_model

        return packed_model_class(get_model(self.builtin))


@register()
class SASRec(_Builtin):
    info = MethodInfo(name="sasrec", family="traditional", paper="Kang & McAuley, ICDM 2018",
                      description="RecBole SASRec, full-softmax CE")
    builtin = "SASRec"

    class Config(TransformerConfig):
        pass

    def model_params(self):
        return transformer_params(self.config)


@register()
class GRU4Rec(_Builtin):
    info = MethodInfo(name="gru4rec", family="traditional", paper="Hidasi et al., ICLR 2016",
                      description="RecBole GRU4Rec, full-softmax CE")
    builtin = "GRU4Rec"

    class Config(RecBoleConfig):
        embedding_size: int = 64
        hidden_size: int = 128
        num_layers: int = 1
        dropout: float = Field(0.3, ge=0, lt=1)

    def model_params(self):
        c = self.config
        return {"embedding_size": c.embedding_size, "hidden_size": c.hidden_size, "num_layers": c.num_layers,
                "dropout_prob": c.dropout}
