"""The readin and readout ``multisession``: registration, contracts, shapes and gradients, PCR
initialisation through ``init_from_data`` and the mapping into the reconstruction's parameters."""

import math

import attrs
import numpy as np
import pytest
import torch

from lfads_core import (Batch, DataStats, InitCache, InitContext, Reconstruction, SessionData,
                        registry)
from lfads_core.conformance import assert_conforms
from lfads_core.errors import SpecError
from lfads_core.model.build import build_model
from lfads_core.model.lfads import SessionShape
from lfads_core.spec.load import spec_from_dict

from lfads_multisession import pcr as P
from lfads_multisession.components import (MultisessionReadin, MultisessionReadinConfig,
                                           MultisessionReadout, MultisessionReadoutConfig,
                                           parameter_weights)


# -- test reconstructions ------------------------------------------------------------------------
@attrs.frozen
class _NoConfig:
    pass


class Identity1(Reconstruction):
    """P = 1, mean = the parameter (data units)."""
    Config, n_params = _NoConfig, 1

    def __init__(self, config=None, n_channels=1):
        super().__init__()

    def nll(self, params, data):
        return 0.5 * (params[..., 0] - data) ** 2

    def mean(self, params):
        return params[..., 0]

    def init_params(self, stats):
        return stats.mean.unsqueeze(-1)


class LogRate(Identity1):
    """P = 1, mean = exp(parameter): Poisson-like log-rate."""

    def mean(self, params):
        return torch.exp(params[..., 0])

    def init_params(self, stats):
        return torch.log(stats.mean.clamp_min(1e-3)).unsqueeze(-1)


class TwoParams(Identity1):
    """P = 2: mean = a + 2 b (the minimum-norm inverse spreads a change over both)."""
    n_params = 2

    def mean(self, params):
        return params[..., 0] + 2.0 * params[..., 1]

    def init_params(self, stats):
        return torch.stack([stats.mean, torch.zeros_like(stats.mean)], dim=-1)


def session_data(synth, offset=0.0):
    return [SessionData(name=f"s{i}", encod=x + offset, recon=x + offset, cond=c,
                        stats=DataStats.from_array(x + offset), bin_size_ms=10.0)
            for i, (x, c) in enumerate(zip(synth.data, synth.cond))]


def build(sessions, recon_cls, d=3, f=3, readin_config=None, readout_config=None):
    readin_config = readin_config or MultisessionReadinConfig(dim=d)
    readout_config = readout_config or MultisessionReadoutConfig(max_row_norm=1e6)
    readins = [MultisessionReadin(readin_config, in_dim=s.encod.shape[2]) for s in sessions]
    recons = [recon_cls(n_channels=s.recon.shape[2]) for s in sessions]
    readouts = [MultisessionReadout(readout_config, in_dim=f, out_dim=s.recon.shape[2] * r.n_params)
                for s, r in zip(sessions, recons)]
    for ro, r, s in zip(readouts, recons, sessions):
        ro.init_bias(r.init_params(s.stats))
    ctx = InitContext(sessions=sessions, reconstructions=recons, cache=InitCache())
    MultisessionReadin.init_from_data(readins, ctx)
    MultisessionReadout.init_from_data(readouts, ctx)
    return readins, readouts, recons, ctx


def cond_avg(x, cond):
    labels = np.unique(cond)
    return P.condition_average(x, cond, labels).reshape(1, -1, x.shape[2])


def r2(target, pred):
    target, pred = np.asarray(target, float), np.asarray(pred, float)
    return 1 - ((target - pred) ** 2).sum() / ((target - target.mean(axis=-2, keepdims=True)) ** 2).sum()


# -- registration, contracts, spec validation -------------------------------------------------
@pytest.mark.parametrize("kind, cls", [("readin", MultisessionReadin), ("readout", MultisessionReadout)])
def test_entry_points_resolve(kind, cls):
    assert registry.lookup(kind, "multisession").dist == "lfads-multisession"
    assert registry.load(kind, "multisession") is cls


@pytest.mark.parametrize("config", [MultisessionReadinConfig(dim=1), MultisessionReadinConfig(dim=7),
                                    MultisessionReadinConfig(dim=4, init="random", frozen=True)])
def test_readin_conforms(config):
    assert_conforms("readin", MultisessionReadin, config)


@pytest.mark.parametrize("config", [None, MultisessionReadoutConfig(init="random", max_row_norm=0.5)])
def test_readout_conforms(config):
    assert_conforms("readout", MultisessionReadout, config)


def test_spec_validation():
    base = {"data": {"path": "x.h5"}}
    gauss = {"name": "gaussian"}
    ok = spec_from_dict({**base, "model": {"readin": {"name": "multisession", "dim": 40},
                                           "readout": {"name": "multisession", "init": "pcr"},
                                           "reconstruction": gauss}})
    assert ok.model.readin.config == MultisessionReadinConfig(dim=40)
    assert ok.model.readout.config == MultisessionReadoutConfig()
    bad = {**base, "model": {"readin": {"name": "multisession", "dim": 0, "init": "pca",
                                        "ridge": -1.0, "smooth_bins": -2},
                             "readout": {"name": "multisession", "max_row_norm": 0},
                             "reconstruction": gauss}}
    with pytest.raises(SpecError) as info:
        spec_from_dict(bad)
    text = str(info.value)
    for needle in ("model.readin.dim: must be >= 1, got 0", "model.readin.init: must be one of",
                   "did you mean 'pcr'", "model.readin.ridge: must be >= 0.0",
                   "model.readin.smooth_bins: must be >= 0.0", "model.readout.max_row_norm: must be > 0.0"):
        assert needle in text, text
    with pytest.raises(SpecError, match="dim"):
        spec_from_dict({**base, "model": {"readin": {"name": "multisession"}, "reconstruction": gauss}})


# -- shapes, gradients, frozen -----------------------------------------------------------------
@pytest.mark.parametrize("n_in, d", [(1, 1), (5, 3), (17, 8)])
def test_readin_shapes_gradients_and_random_init(n_in, d):
    torch.manual_seed(0)
    readin = MultisessionReadin(MultisessionReadinConfig(dim=d, init="random"), in_dim=n_in)
    assert readin.out_dim == d
    x = torch.randn(4, 6, n_in)
    y = readin(x)
    assert y.shape == (4, 6, d)
    y.square().sum().backward()
    assert readin.linear.weight.grad.shape == (d, n_in) and readin.linear.weight.grad.abs().sum() > 0
    assert torch.all(readin.linear.bias == 0)


def test_random_init_scales():
    torch.manual_seed(0)
    w = MultisessionReadin(MultisessionReadinConfig(dim=300, init="random"), in_dim=400).linear.weight
    assert w.var().item() == pytest.approx(1 / 400, rel=0.02)
    w = MultisessionReadout(MultisessionReadoutConfig(init="random"), in_dim=200, out_dim=300).linear.weight
    assert w.var().item() == pytest.approx(1 / 200, rel=0.02)
    assert w.norm(dim=1).mean().item() == pytest.approx(1.0, rel=0.02)  # max_row_norm's default


def test_frozen_readin_gets_no_gradient(synth):
    sessions = session_data(synth)
    config = MultisessionReadinConfig(dim=3, frozen=True)
    readins, readouts, _, _ = build(sessions, Identity1, readin_config=config)
    before = readins[0].linear.weight.detach().clone()
    assert not any(p.requires_grad for p in readins[0].parameters())
    out = readouts[0](readins[0](torch.as_tensor(synth.data[0])))
    out.square().mean().backward()
    assert readins[0].linear.weight.grad is None and readouts[0].linear.weight.grad is not None
    assert readins[0].init_mode == "condition"
    assert torch.equal(readins[0].linear.weight, before)
    assert before.abs().sum() > 0  # PCR set it


@pytest.mark.parametrize("recon_cls", [Identity1, TwoParams])
@pytest.mark.parametrize("f", [1, 3, 6])
def test_readout_shapes_and_gradients_per_session(synth, recon_cls, f):
    sessions = session_data(synth)
    readins, readouts, recons, _ = build(sessions, recon_cls, d=4, f=f)
    for s, ri, ro, rc in zip(sessions, readins, readouts, recons):
        x = torch.as_tensor(s.encod[:2])
        h = ri(x)
        assert h.shape == (2, x.shape[1], 4)
        out = ro(torch.randn(2, x.shape[1], f))
        assert out.shape == (2, x.shape[1], s.recon.shape[2] * rc.n_params)
        out.sum().backward()
        assert ro.linear.weight.grad.shape == (s.recon.shape[2] * rc.n_params, f)


# -- PCR through init_from_data ---------------------------------------------------------------
def test_pcr_round_trip_through_the_modules(synth):
    sessions = session_data(synth)
    readins, readouts, recons, ctx = build(sessions, Identity1)
    outs = []
    for s, ri, ro, rc in zip(sessions, readins, readouts, recons):
        x = torch.as_tensor(cond_avg(s.recon, s.cond), dtype=torch.float32)
        with torch.no_grad():
            h = ri(x)
            params = ro(h).view(1, -1, s.recon.shape[2], 1)
            y = rc.mean(params)
        assert r2(x.numpy(), y.numpy()) > 0.98       # readout(readin(x)) ≈ x
        outs.append(h.numpy()[0])
    for h in outs[1:]:                                # the sessions agree on the shared space
        assert r2(outs[0], h) > 0.95
    assert list(ctx.cache.entries) == ["pcr-k3-s2-r0.01"]  # readin and readout share one entry
    entry = ctx.cache.entries["pcr-k3-s2-r0.01"]
    assert str(entry["mode"]) == "condition" and entry["session_names"].tolist() == ["s0", "s1", "s2"]
    assert all(float(entry[f"s{i}.r2_readin"]) > 0.99 for i in range(3))


def test_cache_is_computed_once_and_reused(synth, monkeypatch):
    sessions = session_data(synth)
    calls = []
    real = P.pcr
    monkeypatch.setattr(P, "pcr", lambda *a, **k: calls.append(k["k"]) or real(*a, **k))
    readins, readouts, recons, ctx = build(sessions, Identity1, d=3, f=5)
    assert calls == [3, 5] and sorted(ctx.cache.entries) == ["pcr-k3-s2-r0.01", "pcr-k5-s2-r0.01"]
    # a second start of the run with the stored entries computes nothing and gives the same weights
    cache = InitCache({k: dict(v) for k, v in ctx.cache.entries.items()})
    again = [MultisessionReadin(MultisessionReadinConfig(dim=3), in_dim=s.encod.shape[2]) for s in sessions]
    MultisessionReadin.init_from_data(again, InitContext(sessions, recons, cache))
    assert calls == [3, 5] and not cache.new
    assert torch.equal(again[1].linear.weight, readins[1].linear.weight)


def test_random_init_is_left_alone(synth):
    sessions = session_data(synth)
    torch.manual_seed(0)
    readins, readouts, _, ctx = build(
        sessions, Identity1, readin_config=MultisessionReadinConfig(dim=3, init="random"),
        readout_config=MultisessionReadoutConfig(init="random"))
    assert not ctx.cache.entries and readins[0].init_mode == "random"
    assert readouts[0].init_mode == "random"
    torch.testing.assert_close(readouts[0].linear.bias, torch.as_tensor(sessions[0].stats.mean))


def test_log_rate_readout_weights_are_loadings_over_rate(synth):
    """Poisson-like log-rate: the parameter change for a data change dx is dx / rate."""
    sessions = session_data(synth, offset=20.0)       # positive "rates"
    _, readouts, recons, _ = build(sessions, LogRate)
    res = P.pcr([s.encod for s in sessions], [s.recon for s in sessions],
                [s.cond for s in sessions], k=3)
    for s, ro, p in zip(sessions, readouts, res.sessions):
        rate = s.stats.mean.double().numpy()
        torch.testing.assert_close(ro.linear.bias, torch.log(s.stats.mean))
        want = p.loadings / rate[:, None]
        np.testing.assert_allclose(ro.linear.weight.detach().numpy(), want, rtol=1e-4, atol=1e-6)
        # to first order the readout reproduces the data-unit loadings around the start
        x = torch.as_tensor(cond_avg(s.recon, s.cond), dtype=torch.float32)
        h = torch.as_tensor(x.numpy() @ p.readin_weight.T + p.readin_bias, dtype=torch.float32)
        with torch.no_grad():
            y = recons[0].mean(ro(h).unsqueeze(-1))
        assert r2(x.numpy(), y.numpy()) > 0.95


def test_two_parameter_readout_uses_the_minimum_norm_inverse(synth):
    sessions = session_data(synth)
    _, readouts, _, _ = build(sessions, TwoParams)
    res = P.pcr([s.encod for s in sessions], [s.recon for s in sessions],
                [s.cond for s in sessions], k=3)
    for ro, p in zip(readouts, res.sessions):
        w = ro.linear.weight.detach().view(p.loadings.shape[0], 2, 3).numpy()
        np.testing.assert_allclose(w[:, 0], p.loadings / 5.0, rtol=1e-4, atol=1e-6)   # g = (1, 2)
        np.testing.assert_allclose(w[:, 1], 2 * p.loadings / 5.0, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(w[:, 0] + 2 * w[:, 1], p.loadings, rtol=1e-4, atol=1e-6)


def test_parameter_weights_clip_rows_and_zero_flat_neurons():
    bias = torch.log(torch.tensor([[0.01], [1.0], [4.0], [1e-9]]))   # rates 0.01, 1, 4, ~0
    load = torch.tensor([[0.5, 0.0], [3.0, 4.0], [2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    w = parameter_weights(LogRate(), bias, load, max_row_norm=1e6).double()
    torch.testing.assert_close(w[:3], load[:3] / torch.tensor([[0.01], [1.0], [4.0]], dtype=torch.float64),
                               rtol=1e-5, atol=1e-8)
    assert torch.all(w[3] == 0)                        # g = rate ~ 1e-9: zero row
    clipped = parameter_weights(LogRate(), bias, load, max_row_norm=1.0).double()
    norms = clipped.norm(dim=1)
    assert torch.all(norms <= 1.0 + 1e-6)
    torch.testing.assert_close(clipped[0], torch.tensor([1.0, 0.0], dtype=torch.float64))  # 50 -> 1
    torch.testing.assert_close(clipped[1], torch.tensor([0.6, 0.8], dtype=torch.float64))  # 5 -> 1, same direction
    torch.testing.assert_close(clipped[2], torch.tensor([0.5, 0.0], dtype=torch.float64))  # 0.5: kept


def test_default_row_clipping_bounds_low_rate_neurons(synth):
    sessions = session_data(synth, offset=20.0)
    sessions = [SessionData(s.name, s.encod, s.recon / 400.0, s.cond, DataStats.from_array(s.recon / 400.0))
                for s in sessions]                   # rates ~0.05: weights would be ~20x the loadings
    _, readouts, _, _ = build(sessions, LogRate, readout_config=MultisessionReadoutConfig())
    for ro in readouts:
        assert ro.linear.weight.norm(dim=1).max().item() <= 1.0 + 1e-5


def test_single_trial_mode_through_the_modules(synth):
    sessions = [SessionData(s.name, s.encod, s.recon, None, s.stats) for s in session_data(synth)]
    readins, readouts, recons, ctx = build(sessions, Identity1)
    assert readins[0].init_mode == "single_trial" and readouts[2].init_mode == "single_trial"
    assert str(ctx.cache.entries["pcr-k3-s2-r0.01"]["mode"]) == "single_trial"
    for s, ri, ro in zip(sessions, readins, readouts):
        x = torch.as_tensor(P.smooth(s.recon, 2.0), dtype=torch.float32)
        with torch.no_grad():
            y = ro(ri(x))
        assert r2(x.reshape(-1, x.shape[2]).numpy(), y.reshape(-1, x.shape[2]).numpy()) > 0.98


# -- inside a tiny model of two sessions ----------------------------------------------------------
def test_forward_backward_in_a_tiny_two_session_model(synth):
    spec = spec_from_dict({"data": {"path": "x.h5"}, "model": {
        "readin": {"name": "multisession", "dim": 6},
        "encoder": {"name": "bigru", "ic_enc_dim": 8, "ci_enc_dim": 8, "ic_dim": 4},
        "generator": {"name": "gru", "gen_dim": 16, "con_dim": 8, "co_dim": 2, "fac_dim": 5},
        "readout": {"name": "multisession"},
        "reconstruction": {"name": "gaussian"}}})
    sessions = session_data(synth)[:2]
    shapes = [SessionShape(n_in=s.encod.shape[2], n_out=s.recon.shape[2], t_in=30, t_out=30)
              for s in sessions]
    torch.manual_seed(0)
    model = build_model(spec.model, shapes, [s.stats for s in sessions])
    ctx = InitContext(sessions, list(model.reconstructions), InitCache())
    type(model.readins[0]).init_from_data(list(model.readins), ctx)
    type(model.readouts[0]).init_from_data(list(model.readouts), ctx)
    assert sorted(ctx.cache.entries) == ["pcr-k5-s2-r0.01", "pcr-k6-s2-r0.01"]
    for i, s in enumerate(sessions):
        x = torch.as_tensor(s.recon[:3])
        batch = Batch(encod=x, recon=x, loss_mask=torch.ones_like(x),
                      grad_mask=torch.ones_like(x, dtype=torch.bool), session=i)
        terms = model.losses(model(x, session=i), batch)
        model.zero_grad()
        (terms["recon"] + terms["kl_ic"] + terms["kl_co"]).backward()
        assert torch.isfinite(model.readins[i].linear.weight.grad).all()
        assert model.readins[1 - i].linear.weight.grad is None
        assert math.isfinite(float(terms["recon"].detach()))
