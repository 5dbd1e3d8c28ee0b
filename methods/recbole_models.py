"""SASRec and GRU4Rec through RecBole's real model classes and trainer.

The shared split is written as RecBole atomic files (one sequence per user, positions as
timestamps), so RecBole's leave-one-out split equals ours. Training uses RecBole's trainer,
one epoch at a time, so we own early stopping, the time budget and resumable checkpoints.
Test ranking uses ``full_sort_predict`` on OUR test histories; metrics come from our evaluator.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from bench.method import Method, MethodConfig, MethodInfo, Recommendations
from bench.registry import register


class RecBoleConfig(MethodConfig):
    epochs: int = Field(50, ge=1)
    patience: int = Field(5, ge=1, description="epochs without validation improvement before stopping")
    batch_size: int = Field(2048, ge=1)
    eval_batch_size: int = Field(4096, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    valid_metric: str = "NDCG@10"
    max_minutes: float | None = Field(None, gt=0, description="stop training after this many minutes")


@contextlib.contextmanager
def _in_dir(path: Path):
    old = os.getcwd()
    os.chdir(path)  # RecBole writes log_tensorboard/ and saved/ relative to the cwd
    try:
        yield
    finally:
        os.chdir(old)


class RecBoleMethod(Method):
    recbole_model: str = ""
    demo_config = {"epochs": 2}
    smoke_config = {"epochs": 1, "batch_size": 256}

    def model_params(self) -> dict:
        raise NotImplementedError

    def _recbole_config(self, data, workdir: Path, seed: int) -> dict:
        import torch

        c = self.config
        return {
            "data_path": str(workdir / "recbole_data"),
            "checkpoint_dir": str(workdir),
            "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
            "MAX_ITEM_LIST_LENGTH": data.max_history,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "loss_type": "CE", "train_neg_sample_args": None,
            "metrics": ["Recall", "NDCG"], "topk": [10, 20], "valid_metric": c.valid_metric,
            "epochs": c.epochs, "stopping_step": c.patience, "train_batch_size": c.batch_size,
            "eval_batch_size": c.eval_batch_size, "learning_rate": c.lr, "weight_decay": c.weight_decay,
            "seed": seed, "reproducibility": True, "use_gpu": torch.cuda.is_available(),
            "show_progress": False, "save_dataset": False, "save_dataloaders": False,
            **self.model_params(),
        }

    @staticmethod
    def _write_atomic(data, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.inter"
        tmp = folder / f".{name}.inter.tmp"
        with open(tmp, "w") as f:
            f.write("user_id:token\titem_id:token\ttimestamp:float\n")
            for u, seq in enumerate(data.sequences):
                for pos, item in enumerate(seq):
                    f.write(f"{u}\t{item}\t{pos}\n")
        os.replace(tmp, path)

    def _build(self, data, workdir: Path, seed: int):
        os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole pickles its checkpoints
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.utils import get_model, init_seed

        name = f"rr_{data.name.replace('-', '_')}"
        self._write_atomic(data, workdir / "recbole_data" / name, name)
        import sys

        argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config parses --key=value from the command line
        try:
            config = Config(model=self.recbole_model, dataset=name, config_dict=self._recbole_config(data, workdir, seed))
        finally:
            sys.argv = argv
        init_seed(seed, True)
        dataset = create_dataset(config)
        train, valid, _ = data_preparation(config, dataset)
        model = get_model(config["model"])(config, train.dataset).to(config["device"])
        # importing RecBole's sequential models runs sine.py's module-level
        # `torch.autograd.set_detect_anomaly(True)`: process-wide anomaly mode, which made every later
        # backward pass (RecBole's and any other method's in the same process) slower: `reasonrec --threads 1
        # demo` before / after this line, minionerec SFT 17.8k / 40.4k tokens/s, gru4rec training 44 s / 25 s
        import torch

        torch.autograd.set_detect_anomaly(False)
        # RecBole id -> our item id (RecBole id 0 is padding)
        tokens = dataset.field2id_token["item_id"]
        self.rb2ours = np.array([-1] + [int(t) for t in tokens[1:]], dtype=np.int64)
        self.ours2rb = np.zeros(data.n_items, dtype=np.int64)
        self.ours2rb[self.rb2ours[1:]] = np.arange(1, len(self.rb2ours))
        self.device = config["device"]
        return config, model, train, valid

    def fit(self, data, *, valid, ctx):
        import torch
        from recbole.utils import get_trainer

        from bench import distributed

        if distributed.world_size() > 1:
            raise RuntimeError(f"{self.info.name} trains with RecBole's own single-process trainer; run it without "
                               "torchrun / accelerate launch (one process)")
        c = self.config
        workdir = ctx.workdir.resolve()  # before the chdir below
        last, best_path = workdir / "last.pth", workdir / "best.pth"
        with _in_dir(workdir):
            config, model, train_data, valid_data = self._build(data, workdir, ctx.seed)
            trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
            start, best, bad, history, stopped = 0, -np.inf, 0, [], "epochs"
            if last.is_file():
                state = torch.load(last, weights_only=False)
                model.load_state_dict(state["model"])
                trainer.optimizer.load_state_dict(state["optimizer"])
                start, best, bad, history = state["epoch"] + 1, state["best"], state["bad"], state["history"]
                stopped = state.get("stopped", "early_stopping" if bad >= c.patience else "epochs")
                ctx.log(f"resumed {self.info.name} at epoch {start} (best {c.valid_metric} {best:.4f})"
                        + ("" if stopped == "epochs" else f"; training had ended ({stopped})"))
                if stopped != "epochs":  # ended by early stopping or the time budget: no more epochs
                    start = c.epochs
            t0 = time.time()
            from tqdm.auto import tqdm

            bar = tqdm(range(start, c.epochs), desc=f"{self.info.name} epochs", disable=not ctx.progress,
                       initial=start, total=c.epochs)
            for epoch in bar:
                te = time.time()
                loss = trainer._train_epoch(train_data, epoch, show_progress=False)
                loss = float(sum(loss) if isinstance(loss, tuple) else loss)
                score, _ = trainer._valid_epoch(valid_data, show_progress=False)
                history.append({"epoch": epoch, "loss": round(loss, 4), c.valid_metric: round(float(score), 5),
                                "seconds": round(time.time() - te, 1)})
                if score > best:
                    best, bad = float(score), 0
                    _atomic_torch_save(model.state_dict(), best_path)
                else:
                    bad += 1
                _atomic_torch_save({"model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                                    "epoch": epoch, "best": best, "bad": bad, "history": history}, last)
                bar.set_postfix(loss=f"{loss:.3f}", valid=f"{score:.4f}", best=f"{best:.4f}")
                ctx.log(f"epoch {epoch}: loss {loss:.4f}, valid {c.valid_metric} {score:.4f} (best {best:.4f})")
                if bad >= c.patience:
                    stopped = "early_stopping"
                elif c.max_minutes and (time.time() - t0) / 60 > c.max_minutes:
                    stopped = "time_budget"
                if stopped != "epochs":
                    _atomic_torch_save({"model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                                        "epoch": epoch, "best": best, "bad": bad, "history": history,
                                        "stopped": stopped}, last)
                    break
        if best_path.is_file():
            model.load_state_dict(torch.load(best_path, weights_only=False))
        model.eval()
        self.model = model
        best_epoch = max(history, key=lambda h: h[c.valid_metric])["epoch"] if history else None
        return {"epochs_run": len(history), "best_epoch": best_epoch, "best_valid": round(float(best), 5),
                "valid_metric": f"recbole {c.valid_metric} (history excluded, RecBole full sort)",
                "stopped_by": stopped, "history": history}

    def recommend(self, histories, *, k):
        import torch
        from recbole.data.interaction import Interaction

        if any(len(h) == 0 for h in histories):
            raise ValueError(f"{self.info.name}.recommend: every history needs at least one item")
        L = max(len(h) for h in histories)
        seq = np.zeros((len(histories), L), dtype=np.int64)
        for r, h in enumerate(histories):
            seq[r, : len(h)] = self.ours2rb[np.asarray(h)]  # RecBole pads at the end
        inter = Interaction({"item_id_list": torch.from_numpy(seq),
                             "item_length": torch.tensor([len(h) for h in histories])}).to(self.device)
        with torch.no_grad():
            scores = self.model.full_sort_predict(inter).view(len(histories), -1)
            scores[:, 0] = -torch.inf
            top = torch.topk(scores, min(k, scores.shape[1] - 1), dim=1)
        items = self.rb2ours[top.indices.cpu().numpy()]
        return Recommendations(items, top.values.cpu().numpy())

    def describe(self):
        n = sum(p.numel() for p in self.model.parameters()) if hasattr(self, "model") else None
        return {"recbole_model": self.recbole_model, "parameters": n}

    def save(self, path: Path) -> None:
        _atomic_torch_save(self.model.state_dict(), Path(path) / "model.pth")

    def load(self, path: Path, data) -> None:
        """Rebuilds the RecBole model (its dataset files go into ``path``) and loads the saved weights."""
        import torch

        path = Path(path).resolve()
        with _in_dir(path):
            _, model, _, _ = self._build(data, path, 0)
        model.load_state_dict(torch.load(path / "model.pth", weights_only=False))
        self.model = model.eval()


def _atomic_torch_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@register()
class SASRec(RecBoleMethod):
    info = MethodInfo(name="sasrec", family="traditional", paper="Kang & McAuley, ICDM 2018",
                      description="RecBole SASRec, full-softmax CE")
    recbole_model = "SASRec"

    class Config(RecBoleConfig):
        hidden_size: int = 64
        n_layers: int = 2
        n_heads: int = 2
        inner_size: int = 256
        dropout: float = Field(0.5, ge=0, lt=1)
        attn_dropout: float = Field(0.5, ge=0, lt=1)

    def model_params(self):
        c = self.config
        return {"hidden_size": c.hidden_size, "n_layers": c.n_layers, "n_heads": c.n_heads,
                "inner_size": c.inner_size, "hidden_dropout_prob": c.dropout, "attn_dropout_prob": c.attn_dropout,
                "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02}


@register()
class GRU4Rec(RecBoleMethod):
    info = MethodInfo(name="gru4rec", family="traditional", paper="Hidasi et al., ICLR 2016",
                      description="RecBole GRU4Rec, full-softmax CE")
    recbole_model = "GRU4Rec"
    demo_config = {"epochs": 1}  # on ml-100k its best validation epoch is the first

    class Config(RecBoleConfig):
        embedding_size: int = 64
        hidden_size: int = 128
        num_layers: int = 1
        dropout: float = Field(0.3, ge=0, lt=1)

    def model_params(self):
        c = self.config
        return {"embedding_size": c.embedding_size, "hidden_size": c.hidden_size, "num_layers": c.num_layers,
                "dropout_prob": c.dropout}
