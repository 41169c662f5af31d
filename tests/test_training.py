"""The training loop (lfads_core.train.loop.Trainer) on a tiny synthetic data set: the loss
improves; the training state round-trips exactly; hyperparameters (the learning rate inside the
optimizer included) take effect, also after restoring a state (REFERENCE.md §6); non-finite losses
are rolled back with a lower learning rate, and give up with TrainingError."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from lfads_core.data.batches import to_tensors
from lfads_core.data.h5 import Split
from lfads_core.data.stats import DataStats
from lfads_core.data.synth import make_lorenz
from lfads_core.errors import TrainingError
from lfads_core.model.build import build_augmentations, build_model
from lfads_core.model.lfads import SessionShape
from lfads_core.spec.load import spec_from_dict
from lfads_core.train.loop import Trainer

N_BINS, N_NEURONS = 20, 10


@pytest.fixture(scope="module")
def data():
    d = make_lorenz(seed=0, n_conditions=8, trials_per_condition=8, n_bins=N_BINS,
                    n_neurons=N_NEURONS, base_rate_hz=20.0, bin_ms=20.0)
    train = to_tensors(Split("train", d["train_encod_data"], d["train_recon_data"]))
    valid = to_tensors(Split("valid", d["valid_encod_data"], d["valid_recon_data"]))
    return train, valid


def make_spec(**train):
    train_cfg = {"max_epochs": 30, "lr": 0.01, "loss_scale": 1.0,
                 "kl": {"ramp_epochs": 5}, "l2": {"ramp_epochs": 5}, **train}
    return spec_from_dict({"data": {"path": "x"}, "model": {
        "encoder": {"name": "bigru", "ic_enc_dim": 16, "ci_enc_dim": 8, "ic_dim": 8},
        "generator": {"name": "gru", "gen_dim": 24, "con_dim": 8, "co_dim": 2, "fac_dim": 4},
        "reconstruction": {"name": "poisson"}, "dropout_rate": 0.05,
        "augmentations": [{"name": "coordinated_dropout", "rate": 0.3}]},
        "train": train_cfg})


def make_trainer(data, seed=0, log=None, **train) -> Trainer:
    tr, va = data
    spec = make_spec(**train)
    torch.manual_seed(seed)
    model = build_model(spec.model, [SessionShape(N_NEURONS, N_NEURONS, N_BINS, N_BINS)],
                        [DataStats.from_array(tr.recon.numpy())])
    return Trainer(model, build_augmentations(spec.model), tr, va, spec.train, batch_size=16,
                   log=log if log is not None else (lambda s: None))


def params_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_same_params(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "seconds"}


# --------------------------------------------------------------------------- #
# Learning
# --------------------------------------------------------------------------- #


def test_training_improves_valid_recon(data):
    trainer = make_trainer(data)
    rows = [trainer.run_epoch() for _ in range(15)]
    assert all(r is not None for r in rows)
    assert trainer.epoch == 15 and len(trainer.history) == 15
    assert [r["epoch"] for r in rows] == list(range(1, 16))  # epochs completed, from 1
    first = rows[0]["valid_recon"]
    last = min(r["valid_recon"] for r in rows[-3:])
    assert all(math.isfinite(r["valid_recon"]) and math.isfinite(r["train_loss"]) for r in rows)
    assert last < 0.93 * first, [round(r["valid_recon"], 4) for r in rows]
    assert rows[-1]["train_recon"] < rows[0]["train_recon"]
    # ramps rise linearly over 5 epochs
    assert [r["kl_ramp"] for r in rows[:7]] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    for key in ("train_kl_ic", "train_kl_co", "valid_kl_ic", "valid_kl_co", "train_l2", "lr",
                "valid_recon_smooth", "is_best"):
        assert key in rows[-1]


def test_fit_stops_at_max_epochs(data):
    trainer = make_trainer(data, max_epochs=3)
    seen = []
    trainer.fit(lambda t, row: seen.append(row["epoch"]))
    assert seen == [1, 2, 3] and trainer.finished
    assert trainer.stop_reason and "max_epochs" in trainer.stop_reason


# --------------------------------------------------------------------------- #
# State round trip
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("through_bytes", [False, True])
def test_state_round_trip_gives_the_same_next_epoch(data, through_bytes):
    a = make_trainer(data, seed=0)
    for _ in range(2):
        a.run_epoch()
    snap = copy.deepcopy(a.state_dict())
    if through_bytes:  # what the checkpoint files do
        buf = io.BytesIO()
        torch.save(snap, buf)
        buf.seek(0)
        snap = torch.load(buf, weights_only=False)
    row_a = a.run_epoch()
    after_a = params_of(a)

    b = make_trainer(data, seed=1)  # different initial weights, fresh optimizer, epoch 0
    b.run_epoch()  # and a different optimizer state, RNG state and history
    torch.manual_seed(12345)
    b.load_state_dict(snap)
    assert b.epoch == 2 and len(b.history) == 2
    assert b.history == snap["history"]
    assert_same_params(params_of(b), snap["model"])
    opt_b, opt_snap = b.optimizer.state_dict(), snap["optimizer"]
    assert opt_b["param_groups"] == opt_snap["param_groups"]
    for i, st in opt_snap["state"].items():
        for key, val in st.items():
            assert torch.equal(torch.as_tensor(opt_b["state"][i][key]), torch.as_tensor(val)), (i, key)
    assert torch.equal(b.data_rng.get_state(), snap["data_rng"])
    assert torch.equal(torch.get_rng_state(), snap["rng"])
    assert b.hparams == snap["hparams"]

    row_b = b.run_epoch()
    assert strip(row_b) == strip(row_a)
    assert_same_params(params_of(b), after_a)


def test_state_dict_holds_counters(data):
    t = make_trainer(data)
    t.run_epoch()
    sd = t.state_dict()
    for key in ("model", "optimizer", "hparams", "epoch", "history", "smoothed", "best",
                "best_epoch", "since_best", "plateau", "nan_recoveries", "stop_reason", "rng",
                "data_rng"):
        assert key in sd
    assert sd["epoch"] == 1 and sd["smoothed"] == t.history[0]["valid_recon_smooth"]


# --------------------------------------------------------------------------- #
# Hyperparameters
# --------------------------------------------------------------------------- #


def lrs(trainer: Trainer) -> set:
    return {g["lr"] for g in trainer.optimizer.param_groups}


def test_set_hparams_changes_optimizer_and_model(data):
    t = make_trainer(data)
    assert lrs(t) == {0.01} and t.hparams["train.lr"] == 0.01
    t.set_hparams({"train.lr": 0.002})
    assert lrs(t) == {0.002} and t.hparams["train.lr"] == 0.002
    t.set_hparams({"model.dropout_rate": 0.2, "model.augmentations.0.rate": 0.5,
                   "train.kl.ic_scale": 1e-3})
    assert t.model.dropout_rate == 0.2
    assert t.augmentations[0].rate == 0.5
    assert t.hparams["train.kl.ic_scale"] == 1e-3
    with pytest.raises(KeyError):
        t.set_hparams({"train.nope": 1.0})
    row = t.run_epoch()
    assert row["lr"] == 0.002 and lrs(t) == {0.002}


def test_state_hparams_win_over_optimizer_state(data):
    a = make_trainer(data, lr=0.01)
    a.run_epoch()
    a.set_hparams({"train.lr": 0.003})
    state = copy.deepcopy(a.state_dict())
    # an optimizer state that disagrees (as after an exploit copied a winner's optimizer)
    for g in state["optimizer"]["param_groups"]:
        g["lr"] = 0.05
    b = make_trainer(data, lr=0.004)
    b.load_state_dict(state)
    assert lrs(b) == {0.003} and b.hparams["train.lr"] == 0.003
    b.set_hparams({"train.lr": 0.0007})
    assert lrs(b) == {0.0007}
    assert b.run_epoch()["lr"] == 0.0007


def test_state_restores_every_hyperparameter(data):
    a = make_trainer(data)
    a.set_hparams({"model.dropout_rate": 0.15, "model.augmentations.0.rate": 0.45,
                   "train.l2.gen_scale": 3e-3})
    state = copy.deepcopy(a.state_dict())
    b = make_trainer(data)
    b.load_state_dict(state)
    assert b.model.dropout_rate == 0.15
    assert b.augmentations[0].rate == 0.45
    assert b.hparams == a.hparams


def test_restored_lr_takes_effect_in_the_step(data):
    # lr 0 from the state's hparams: a whole training epoch must leave the weights unchanged,
    # although the optimizer state carries a non-zero lr.
    a = make_trainer(data, lr=0.01)
    a.run_epoch()
    state = copy.deepcopy(a.state_dict())
    state["hparams"]["train.lr"] = 0.0
    b = make_trainer(data, lr=0.01)
    b.load_state_dict(state)
    before = params_of(b)
    b.run_epoch()
    assert_same_params(params_of(b), before)
    b.set_hparams({"train.lr": 0.01})
    b.run_epoch()
    assert any(not torch.equal(v, params_of(b)[k]) for k, v in before.items())


def test_load_state_dict_does_not_alias_the_source(data):
    winner = make_trainer(data, seed=0)
    winner.run_epoch()
    loser = make_trainer(data, seed=1)
    loser.load_state_dict(winner.state_dict())  # an exploit without an explicit copy
    mine = copy.deepcopy(loser.optimizer.state_dict()["state"])
    winner.run_epoch()  # training the winner must not touch the loser's optimizer state
    theirs = loser.optimizer.state_dict()["state"]
    for i, st in mine.items():
        for key, val in st.items():
            assert torch.equal(torch.as_tensor(theirs[i][key]), torch.as_tensor(val)), (i, key)


# --------------------------------------------------------------------------- #
# Non-finite losses
# --------------------------------------------------------------------------- #


def nan_losses(model, when):
    """Wrap model.losses so that the calls whose 0-based index satisfies ``when`` give NaN."""
    original = model.losses
    calls = {"n": 0}

    def losses(out, batch):
        terms = original(out, batch)
        i = calls["n"]
        calls["n"] += 1
        if when(i):
            terms["recon"] = terms["recon"] * float("nan")
        return terms

    return losses, calls


def test_nan_once_is_rolled_back_and_training_continues(data, monkeypatch):
    logs = []
    t = make_trainer(data, log=logs.append)
    t.run_epoch()
    before = params_of(t)
    opt_before = copy.deepcopy(t.optimizer.state_dict())
    losses, calls = nan_losses(t.model, lambda i: i == 2)  # mid-epoch, after two updates
    monkeypatch.setattr(t.model, "losses", losses)

    assert t.run_epoch() is None
    assert calls["n"] == 3
    assert t.epoch == 1 and len(t.history) == 1
    assert_same_params(params_of(t), before)  # the partial epoch is undone
    steps = {float(s["step"]) for s in t.optimizer.state_dict()["state"].values()}
    assert steps == {float(s["step"]) for s in opt_before["state"].values()}
    assert t.hparams["train.lr"] == pytest.approx(0.005) and lrs(t) == {t.hparams["train.lr"]}
    assert t.nan_recoveries == 1
    assert logs and "non-finite" in logs[-1]

    row = t.run_epoch()
    assert row is not None and row["epoch"] == 2 and t.epoch == 2
    assert row["lr"] == pytest.approx(0.005)
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["valid_recon"])


def test_nan_in_validation_is_rolled_back(data, monkeypatch):
    t = make_trainer(data)
    before = params_of(t)
    n_train_batches = math.ceil(data[0].n_trials / 16)
    losses, _ = nan_losses(t.model, lambda i: i == n_train_batches)  # first validation batch
    monkeypatch.setattr(t.model, "losses", losses)
    assert t.run_epoch() is None
    assert_same_params(params_of(t), before)
    assert t.epoch == 0 and t.nan_recoveries == 1


def test_nan_gradient_is_rolled_back(data, monkeypatch):
    # A finite loss value whose gradient is NaN (d/dx sqrt(x) at 0, times 0).
    t = make_trainer(data)
    before = params_of(t)
    original = t.model.losses
    calls = {"n": 0}

    def losses(out, batch):
        terms = original(out, batch)
        if calls["n"] == 1:
            terms["recon"] = terms["recon"] + torch.sqrt(out.params.sum() * 0.0)
        calls["n"] += 1
        return terms

    monkeypatch.setattr(t.model, "losses", losses)
    assert t.run_epoch() is None
    assert_same_params(params_of(t), before)
    assert t.hparams["train.lr"] == pytest.approx(0.005)
    assert t.run_epoch() is not None


def test_nan_every_time_raises_training_error(data, monkeypatch):
    t = make_trainer(data, nan={"max_recoveries": 2, "lr_factor": 0.1})
    losses, _ = nan_losses(t.model, lambda i: True)
    monkeypatch.setattr(t.model, "losses", losses)
    assert t.run_epoch() is None
    assert t.run_epoch() is None
    assert t.hparams["train.lr"] == pytest.approx(0.01 * 0.1 * 0.1)
    with pytest.raises(TrainingError, match="non-finite"):
        t.run_epoch()
    assert t.epoch == 0


def test_nan_every_time_fit_raises(data, monkeypatch):
    t = make_trainer(data, nan={"max_recoveries": 0})
    losses, _ = nan_losses(t.model, lambda i: True)
    monkeypatch.setattr(t.model, "losses", losses)
    with pytest.raises(TrainingError):
        t.fit()


def test_same_seed_same_run(data):
    """Deterministic seeding: two runs from the same seed give the same metrics and weights."""
    runs = []
    for _ in range(2):
        t = make_trainer(data, seed=0)
        t.run_epoch()
        t.run_epoch()
        runs.append(t)
    a, b = runs
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert_same_params(params_of(a), params_of(b))
    other = make_trainer(data, seed=1)
    other.run_epoch()
    assert other.history[0]["train_loss"] != a.history[0]["train_loss"]
