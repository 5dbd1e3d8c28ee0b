"""The RecBole route: a RecBole model class (built in, e.g. SASRec, or a custom one such as ReaRec's) trained
by RecBole's trainer under the benchmark's protocol. The plugins are ``methods.recbole_models`` (SASRec,
GRU4Rec) and ``methods.rearec``.

The shared split is written as RecBole atomic files (one sequence per user, positions as
timestamps), so RecBole's leave-one-out split equals ours and RecBole trains only on training
positions. Training uses RecBole's trainer, one epoch at a time (``trainer._train_epoch``), so we own
model selection, early stopping, the time budget and resumable checkpoints. RecBole's own evaluator is
not used: each epoch is scored by the run's selection protocol (``FitContext.validate`` on every
validation user) with the same ranking as ``recommend`` (``full_sort_predict`` on OUR histories), and
the test metrics come from our evaluator.

Resuming is exact: ``last.pth`` holds, besides the model and optimizer, every random state training
draws on (python ``random``, numpy, torch CPU and CUDA, and the ``torch.Generator`` of RecBole's train
dataloader, which shuffles each epoch; :mod:`bench.recbole_rng`), restored after the rebuild; a run
interrupted after epoch e trains epoch e+1 exactly as an uninterrupted run does.

Packed training (``packed: true``; ReaRec's default, an option for SASRec and GRU4Rec): instead of RecBole's
one sample per training prefix (the whole history padded to ``max_history`` and encoded for one scored
output), user windows (:func:`training_windows`) are encoded once by the causal model and every position
with a target is scored: the same (history, target) pairs and the same mean CE (tested equal), about
``mean sequence length`` times fewer encoder passes (SASRec's original training). ``batch_size`` keeps its
meaning: about that many targets per optimizer step.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import numpy as np

from bench.atomic import atomic_torch_save, atomic_write_text
from bench.epochs import EpochBook
from bench.packed import packed_batch, training_windows, window_batches
from bench.method import Method, Recommendations, TrainingDiverged, validation_epoch
from bench.recbole_rng import rng_state, set_rng_state


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
    # ml-100k in the demo: one epoch of batch 256 (380 steps) beats two of 2048 (96 steps) in half the time:
    # SASRec N@10 0.0380 vs 0.0326, GRU4Rec 0.0303 vs 0.0187 (1 epoch of 2048: below popularity, 0.0224)
    demo_config = {"epochs": 1, "batch_size": 256}
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
            "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]},
            "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
            "MAX_ITEM_LIST_LENGTH": data.max_history,
            # the interaction file stops before each user's test item (never read, so that nothing RecBole builds
            # -- not even its id remapping -- depends on test data); leaving the last one (the validation item)
            # out, RecBole's train dataset holds exactly the training positions
            "eval_args": {"split": {"LS": "test_only"}, "order": "TO", "mode": "full", "group_by": "user"},
            "loss_type": "CE", "train_neg_sample_args": None,
            "epochs": c.epochs, "train_batch_size": c.batch_size, "learning_rate": c.lr,
            "weight_decay": c.weight_decay,
            "seed": seed, "reproducibility": True, "use_gpu": torch.cuda.is_available(),
            "show_progress": False, "save_dataset": False, "save_dataloaders": False,
            **self.model_params(),
        }

    @staticmethod
    def _write_inter(data, folder: Path, name: str) -> None:
        """Every user's interactions but the last (the test item: not written), and every item of the
        catalogue (``.item``: items seen only in test targets get a RecBole id too, after the others)."""
        lines = ["user_id:token\titem_id:token\ttimestamp:float\n"]
        lines += [f"{u}\t{item}\t{pos}\n" for u, seq in enumerate(data.sequences) for pos, item in enumerate(seq[:-1])]
        atomic_write_text(folder / f"{name}.inter", "".join(lines))
        atomic_write_text(folder / f"{name}.item", "item_id:token\n" + "".join(f"{i}\n" for i in range(data.n_items)))

    def _build(self, data, workdir: Path, seed: int):
        """RecBole's config, model and train dataloader (RecBole's validation and test dataloaders are
        not built: selection uses ``FitContext.validate``, the test our evaluator)."""
        os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole pickles its checkpoints
        import warnings

        # RecBole 1.2.1 on pandas 2 / torch 2.x: FutureWarnings (fillna inplace, torch.cuda.amp.GradScaler) on
        # every run, nothing a user can act on
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole(\..*)?")
        from recbole.config import Config
        from recbole.data import create_dataset
        from recbole.data.utils import create_samplers, get_dataloader
        from recbole.utils import get_model, init_seed

        name = f"rr_{data.name.replace('-', '_')}"
        self._write_inter(data, workdir / "recbole_data" / name, name)
        import sys

        argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config parses --key=value from the command line
        try:
            config = Config(model=self.recbole_model, dataset=name, config_dict=self._recbole_config(data, workdir, seed))
        finally:
            sys.argv = argv
        init_seed(seed, True)
        dataset = create_dataset(config)
        # the train part of recbole.data.data_preparation: the same split and the same train dataloader
        built = dataset.build()
        train_sampler, _, _ = create_samplers(config, dataset, built)
        train = get_dataloader(config, "train")(config, built[0], train_sampler, shuffle=config["shuffle"])
        cls = get_model(config["model"]) if isinstance(self.recbole_model, str) else self.recbole_model  # custom
        model = cls(config, train.dataset).to(config["device"])
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
        return config, model, train

    def _rank(self, model, histories, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of ``full_sort_predict`` for each history: (our item ids, scores). Used by
        ``recommend`` and by validation."""
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
            scores = model.full_sort_predict(inter).view(len(histories), -1)
            scores[:, 0] = -torch.inf
            top = torch.topk(scores, min(k, scores.shape[1] - 1), dim=1)
        return self.rb2ours[top.indices.cpu().numpy()], top.values.cpu().numpy()

    def _validate(self, model, data, valid, ctx) -> dict:
        model.eval()
        return ctx.validate(lambda h, k: self._rank(model, h, k)[0], valid, data.n_items,
                            batch_size=self.config.eval_batch_size)

    def _diverged(self, loss, epoch: int) -> TrainingDiverged:
        return TrainingDiverged(f"{self.info.name}: the training loss is {loss} in epoch {epoch} (lr {self.config.lr:g}); "
                                "lower the learning rate or check the data. No result is written.")

    def packed_loss(self, model, windows, lengths, first):
        """The training loss of a packed batch (``packed: true``): right-padded RecBole-id windows, their
        lengths and first target positions (:func:`packed_batch`)."""
        return model.packed_loss(windows, lengths, first)

    def _train_epoch(self, trainer, train_data, epoch: int) -> float:
        if self.config.packed:
            return self._train_packed_epoch(trainer, epoch)
        try:
            loss = trainer._train_epoch(train_data, epoch, show_progress=getattr(self, "_progress", False))
        except ValueError as e:  # RecBole's trainer: ValueError("Training loss is nan")
            if str(e) != "Training loss is nan":
                raise
            raise self._diverged("NaN", epoch) from e
        loss = float(sum(loss) if isinstance(loss, tuple) else loss)
        if not math.isfinite(loss):
            raise self._diverged(loss, epoch)
        return loss

    def _train_packed_epoch(self, trainer, epoch: int) -> float:
        """Batches of whole windows (about ``batch_size`` targets each) in an order drawn from (seed, epoch),
        so a resumed run repeats it; RecBole's optimizer (Adam, lr, weight decay) steps once per batch.
        Returns the mean batch loss."""
        import torch
        from tqdm.auto import tqdm

        model, opt, c = trainer.model, trainer.optimizer, self.config
        model.train()
        order = np.random.default_rng([self._seed, epoch]).permutation(len(self._windows))
        total, n = 0.0, 0
        bar = tqdm(total=len(order), desc=f"epoch {epoch} windows", leave=False,
                   disable=not getattr(self, "_progress", False))
        for batch, _, done in window_batches(self._windows, order, c.batch_size):
            seq, lens, first = packed_batch(batch, self.ours2rb)
            loss = self.packed_loss(model, seq.to(self.device), lens.to(self.device), first.to(self.device))
            if not torch.isfinite(loss):
                raise self._diverged(float(loss), epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(done - bar.n)
            total, n = total + float(loss.detach()), n + 1
        bar.close()
        return total / max(n, 1)

    def fit(self, data, *, valid, ctx):
        import torch
        from recbole.utils import get_trainer

        from bench import distributed

        self._progress = bool(ctx.progress)  # batch progress inside each epoch
        if self.config.packed:
            self._windows = training_windows(data.train_sequences(), data.max_history)
            self._seed = ctx.seed

        if distributed.world_size() > 1:
            raise RuntimeError(f"{self.info.name} trains with RecBole's own single-process trainer; run it without "
                               "torchrun / accelerate launch (one process)")
        c = self.config
        metric = ctx.selection_metric
        selection = ctx.selection(None, len(valid))
        workdir = ctx.workdir.resolve()  # before the chdir below
        workdir.mkdir(parents=True, exist_ok=True)
        last, best_path = workdir / "last.pth", workdir / "best.pth"
        with _in_dir(workdir):
            config, model, train_data = self._build(data, workdir, ctx.seed)
            trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
            book = EpochBook(c.epochs, c.patience, c.max_minutes)
            if not last.is_file():  # a fresh start: record the item numbering its checkpoints will use
                np.save(workdir / "item_ids.npy", self.rb2ours)
            if last.is_file():
                state = torch.load(last, map_location="cpu", weights_only=False)
                if "rng" not in state:  # written before selection went through ctx.validate
                    raise RuntimeError(f"{last} predates the shared selection protocol and exact resume (its epochs "
                                       "were selected by RecBole's own validation); delete it to train from scratch")
                if state["selection"] != selection:
                    raise RuntimeError(f"{last} was selected by {state['selection']}, this run by {selection}; "
                                       "delete it to train from scratch")
                self._check_item_ids(workdir, last)
                model.load_state_dict(state["model"])
                trainer.optimizer.load_state_dict(state["optimizer"])
                set_rng_state(state["rng"], train_data)  # after the rebuild, which re-seeded everything
                book.restore(state)
                ctx.log(f"resumed {self.info.name} at epoch {book.epoch + 1} (best {metric} {book.best:.4f})"
                        + ("" if not book.done else f"; training had ended ({book.stopped})"))
            book.started = time.time()
            from tqdm.auto import tqdm

            todo = book.remaining()  # empty once ended by early stopping or the time budget
            bar = tqdm(todo, desc=f"{self.info.name} epochs", disable=not ctx.progress,
                       initial=todo.start if todo else c.epochs, total=c.epochs)
            for epoch in bar:
                te = time.time()
                if hasattr(model, "set_epoch"):  # a custom model with epoch-dependent losses (warm-up)
                    model.set_epoch(epoch)
                loss = self._train_epoch(trainer, train_data, epoch)
                with validation_epoch(epoch):
                    got = self._validate(model, data, valid, ctx)
                score = float(got["score"])
                record = {"epoch": epoch, "loss": round(loss, 4),
                          **{f"valid_{m}": round(float(v), 5) for m, v in got.items() if "@" in m},
                          "valid_score": round(score, 5), "seconds": round(time.time() - te, 1)}
                if book.end_epoch(epoch, score, record):
                    atomic_torch_save(model.state_dict(), best_path)
                if ctx.tracker is not None:
                    ctx.tracker.log_epoch("train", record)
                atomic_torch_save({"model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                                   "rng": rng_state(train_data), **book.state(), "selection": selection}, last)
                bar.set_postfix(loss=f"{loss:.3f}", valid=f"{score:.4f}", best=f"{book.best:.4f}")
                ctx.log(f"epoch {epoch}: loss {loss:.4f}, valid {metric} {score:.4f} (best {book.best:.4f})")
                if book.done:
                    break
        if best_path.is_file():
            model.load_state_dict(torch.load(best_path, map_location=self.device, weights_only=False))
        model.eval()
        self.model = model
        return {**book.facts(), "best_valid": round(float(book.best), 5), "selection": selection}

    def recommend(self, histories, *, k):
        items, scores = self._rank(self.model, histories, k)
        return Recommendations(items, scores)

    def describe(self):
        n = sum(p.numel() for p in self.model.parameters()) if hasattr(self, "model") else None
        name = self.recbole_model if isinstance(self.recbole_model, str) else self.recbole_model.__name__
        return {"recbole_model": name, "parameters": n}

    def _check_item_ids(self, folder: Path, what: Path) -> None:
        """RecBole numbers items by first appearance in its interaction file, which changed when that file
        stopped holding test items: a checkpoint or model must have been made with this run's numbering
        (``item_ids.npy`` beside it), or its embedding rows would belong to other items."""
        saved = Path(folder) / "item_ids.npy"
        if not saved.is_file():
            raise RuntimeError(f"{what} has no item_ids.npy (made before the RecBole route stopped writing test "
                               "interactions, which renumbered RecBole's items): delete it and train again")
        if not np.array_equal(np.load(saved), self.rb2ours):
            raise RuntimeError(f"{what}: RecBole's item numbering differs from the one it was trained with "
                               f"({saved}); train again")

    def save(self, path: Path) -> None:
        atomic_torch_save(self.model.state_dict(), Path(path) / "model.pth")
        np.save(Path(path) / "item_ids.npy", self.rb2ours)

    def load(self, path: Path, data) -> None:
        """Rebuilds the RecBole model and loads the saved weights. RecBole's dataset files go into a
        temporary folder: ``path`` may be another run's ``model/`` (``reasonrec evaluate``), never written."""
        import tempfile

        import torch

        path = Path(path).resolve()
        with tempfile.TemporaryDirectory(prefix="reasonrec-recbole-") as tmp, _in_dir(Path(tmp)):
            _, model, _ = self._build(data, Path(tmp), 0)
        self._check_item_ids(path, path / "model.pth")
        model.load_state_dict(torch.load(path / "model.pth", map_location=self.device, weights_only=False))
        self.model = model.eval()
