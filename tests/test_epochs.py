"""The epoch bookkeeping both training loops share (bench.epochs.EpochBook)."""
import time

from bench.epochs import EpochBook


def _run(book, scores):
    ran = []
    for epoch in book.remaining():
        book.end_epoch(epoch, scores[epoch], {"epoch": epoch, "valid_score": scores[epoch]})
        ran.append(epoch)
        if book.done:
            break
    return ran


def test_patience_stops_after_that_many_epochs_without_a_new_best():
    book = EpochBook(epochs=10, patience=2)
    # best at epoch 1 (0.5); epochs 2 and 3 do not beat it (an equal score is no improvement)
    assert _run(book, [0.1, 0.5, 0.5, 0.4, 0.9]) == [0, 1, 2, 3]
    assert (book.best, book.best_epoch, book.bad, book.stopped) == (0.5, 1, 2, "early_stopping")
    assert book.facts()["epochs_run"] == 4 and list(book.remaining()) == []


def test_step_cap_and_all_epochs():
    book = EpochBook(epochs=3, patience=5, max_steps=7)
    book.step = 7
    assert _run(book, [0.1, 0.2, 0.3]) == [0] and book.stopped == "max_steps"
    book = EpochBook(epochs=3, patience=5)
    assert _run(book, [0.1, 0.2, 0.3]) == [0, 1, 2] and book.stopped == "epochs" and book.best_epoch == 2


def test_resume_reads_its_own_state_and_both_loops_older_keys():
    book = EpochBook(epochs=10, patience=3)
    for e, s in enumerate([0.1, 0.3]):
        book.end_epoch(e, s, {"epoch": e, "valid_score": s})
    again = EpochBook(epochs=10, patience=3)
    again.restore(book.state())
    assert again.state() == book.state() and list(again.remaining()) == list(range(2, 10))
    gen = {"epoch": 1, "step": 40, "best": 0.3, "bad": 0, "done": "time_budget",  # the generative loop's
           "history": [{"epoch": 0, "valid_score": 0.1}, {"epoch": 1, "valid_score": 0.3}]}
    old = EpochBook(epochs=10, patience=3)
    old.restore(gen)
    assert (old.stopped, old.best_epoch, old.step, list(old.remaining())) == ("time_budget", 1, 40, [])
    recbole = {"epoch": 4, "best": 0.2, "best_epoch": 3, "bad": 1, "history": [], "stopped": "epochs"}
    old = EpochBook(epochs=10, patience=3)
    old.restore(recbole)
    assert (old.stopped, old.best_epoch, old.step, list(old.remaining())) == ("epochs", 3, 0, list(range(5, 10)))


def test_the_time_budget_counts_every_attempt_up_to_its_last_finished_epoch():
    # a one-minute budget; the first attempt finishes epoch 0 after 40 s, saves its state, and is killed
    first = EpochBook(epochs=10, patience=5, max_minutes=1.0)
    first.started = time.time() - 40
    first.end_epoch(0, 0.1, {"epoch": 0, "valid_score": 0.1})
    assert not first.done and 39 < first.state()["seconds_spent"] < 45
    # the resumed attempt trains epoch 1 in 30 s: 70 s in all is past the minute, though this attempt took 30
    again = EpochBook(epochs=10, patience=5, max_minutes=1.0)
    again.restore(first.state())
    again.started = time.time() - 30
    assert _run(again, [0.1, 0.2] + [0.3] * 8) == [1] and again.stopped == "time_budget"
    assert 69 < again.state()["seconds_spent"] < 80
    # a state written before the budget counted attempts resumes with a fresh clock (per attempt, as then)
    old = EpochBook(epochs=10, patience=5, max_minutes=1.0)
    old.restore({k: v for k, v in first.state().items() if k != "seconds_spent"})
    old.started = time.time() - 30
    old.end_epoch(1, 0.2, {"epoch": 1, "valid_score": 0.2})
    assert not old.done and old.spent < 35
