"""Shapes of the assembled LFADS model in every configuration, and the information flow of the
encoders (REFERENCE.md §1): controller on/off, external inputs, IC window, ci lag, separate
encoder stacks, forward-prediction bins, held-out neurons, Gaussian reconstruction, several
posterior samples, deterministic evaluation."""

from __future__ import annotations


import pytest
import torch

from lfads_core.model.build import build_model
from lfads_core.model.lfads import LFADS, ModelOutput, SessionShape
from lfads_core.protocols import Batch
from lfads_core.spec.load import spec_from_dict

BASE_ENC = {"name": "bigru", "ic_enc_dim": 6, "ci_enc_dim": 6, "ic_dim": 4, "ci_lag": 1}
BASE_GEN = {"name": "gru", "gen_dim": 8, "con_dim": 5, "co_dim": 2, "fac_dim": 3}


def make(enc=None, gen=None, recon="poisson", dropout=0.0, seed=0, **shape) -> LFADS:
    enc_cfg = {**BASE_ENC, **(enc or {})}
    gen_cfg = {**BASE_GEN, **(gen or {})}
    spec = spec_from_dict({"data": {"path": "x"}, "model": {
        "encoder": enc_cfg, "generator": gen_cfg, "reconstruction": {"name": recon},
        "dropout_rate": dropout}})
    dims = {"n_in": 5, "n_out": 5, "t_in": 7, "t_out": 7, "ext_dim": 0, **shape}
    torch.manual_seed(seed)
    return build_model(spec.model, [SessionShape(**dims)])


def inputs(model: LFADS, bsz=3, seed=1):
    s = model.sessions[0]
    gen = torch.Generator().manual_seed(seed)
    encod = torch.poisson(torch.full((bsz, s.t_in, s.n_in), 1.5), generator=gen)
    recon = torch.poisson(torch.full((bsz, s.t_out, s.n_out), 1.5), generator=gen)
    ext = torch.randn(bsz, s.t_out, s.ext_dim, generator=gen) if s.ext_dim else None
    return encod, recon, ext


def make_batch(encod, recon, ext=None) -> Batch:
    return Batch(encod=encod, recon=recon, loss_mask=torch.ones_like(recon),
                 grad_mask=torch.ones_like(recon, dtype=torch.bool), ext=ext)


def check_output(model: LFADS, out: ModelOutput, rows: int, has_con: bool):
    s = model.sessions[0]
    p = model.reconstructions[0].n_params
    gen_cfg = model.generator.config
    z = model.encoder.ic_dim
    assert out.params.shape == (rows, s.t_out, s.n_out, p)
    assert out.factors.shape == (rows, s.t_out, gen_cfg.fac_dim)
    assert out.gen_states.shape == (rows, s.t_out, gen_cfg.gen_dim)
    assert out.ic_mean.shape == (rows, z) and out.ic_std.shape == (rows, z)
    assert (out.ic_std > 0).all()
    if has_con:
        u = gen_cfg.co_dim
        for t in (out.gen_inputs, out.co_means, out.co_stds):
            assert t is not None and t.shape == (rows, s.t_out, u)
        assert (out.co_stds > 0).all()
    else:
        assert out.gen_inputs is None and out.co_means is None and out.co_stds is None
    for t in (out.params, out.factors, out.gen_states):
        assert torch.isfinite(t).all()
    assert model.means(out).shape == (rows, s.t_out, s.n_out)


def check_losses(model: LFADS, out: ModelOutput, batch: Batch, has_con: bool):
    terms = model.losses(out, batch)
    for key in ("recon", "kl_ic", "kl_co", "penalty"):
        assert key in terms and terms[key].shape == () and torch.isfinite(terms[key])
    assert terms["kl_ic"] > 0
    if has_con:
        assert terms["kl_co"] > 0 and "l2_con" in terms
    else:
        assert float(terms["kl_co"]) == 0.0 and "l2_con" not in terms
    assert "l2_gen" in terms and "l2_ic_enc" in terms
    assert ("l2_ci_enc" in terms) == model.encoder.use_ci
    for key, value in terms.items():
        if key.startswith("l2_"):
            assert value.shape == () and value > 0
    total = sum(terms.values())
    total.backward()  # every term is differentiable
    return terms


# --------------------------------------------------------------------------- #
# Every configuration
# --------------------------------------------------------------------------- #

CONFIGS = {
    "default": ({}, {}, {}, True),
    "co_dim0": ({}, {"co_dim": 0}, {}, False),
    "con_dim0": ({}, {"con_dim": 0}, {}, False),
    "ci_enc_dim0": ({"ci_enc_dim": 0}, {}, {}, False),
    "ext": ({}, {}, {"ext_dim": 2}, True),
    "ext_no_con": ({}, {"co_dim": 0}, {"ext_dim": 3}, False),
    "ic_window": ({"ic_enc_seq_len": 3}, {}, {}, True),
    "ic_window_separate": ({"ic_enc_seq_len": 4, "ci_enc_dim": 3}, {}, {}, True),
    "ic_window_no_con": ({"ic_enc_seq_len": 2}, {"co_dim": 0}, {}, False),
    "lag0": ({"ci_lag": 0}, {}, {}, True),
    "lag3": ({"ci_lag": 3}, {}, {}, True),
    "separate_stacks": ({"ic_enc_dim": 7, "ci_enc_dim": 4}, {}, {}, True),
    "forward_bins": ({}, {}, {"t_out": 10}, True),
    "forward_bins_no_con": ({}, {"con_dim": 0}, {"t_out": 9}, False),
    "held_out": ({}, {}, {"n_out": 8}, True),
    "held_out_forward_ext": ({"ic_enc_dim": 5}, {}, {"n_out": 8, "t_out": 11, "ext_dim": 1}, True),
    "clip0": ({"cell_clip": 0.0}, {"cell_clip": 0.0}, {}, True),
}


@pytest.mark.parametrize("recon", ["poisson", "gaussian"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_shapes_and_losses(name, recon):
    enc, gen, shape, has_con = CONFIGS[name]
    model = make(enc, gen, recon, dropout=0.1, **shape)
    assert (model.co_prior is not None) == has_con
    assert model.generator.co_dim == (gen.get("co_dim", BASE_GEN["co_dim"]) if has_con else 0)
    model.train()
    encod, recon_data, ext = inputs(model)
    out = model(encod, ext=ext, sample=True)
    check_output(model, out, 3, has_con)
    check_losses(model, out, make_batch(encod, recon_data, ext), has_con)


@pytest.mark.parametrize("name", ["default", "ext", "co_dim0", "forward_bins", "held_out_forward_ext"])
def test_n_samples_rows(name):
    enc, gen, shape, has_con = CONFIGS[name]
    model = make(enc, gen, dropout=0.1, **shape)
    model.eval()
    encod, recon, ext = inputs(model, bsz=2)
    s = 4
    out = model(encod, ext=ext, sample=True, n_samples=s)
    check_output(model, out, 2 * s, has_con)
    # each trial is repeated consecutively; the encoder ran once per trial
    one = model(encod, ext=ext, sample=False)
    torch.testing.assert_close(out.ic_mean, one.ic_mean.repeat_interleave(s, 0))
    torch.testing.assert_close(out.ic_std, one.ic_std.repeat_interleave(s, 0))
    # samples of one trial differ from each other
    assert (out.params[0] - out.params[1]).abs().max() > 0
    rep = lambda x: None if x is None else x.repeat_interleave(s, 0)  # noqa: E731
    check_losses(model, out, make_batch(rep(encod), rep(recon), rep(ext)), has_con)
    # without sampling all rows of a trial are the same, and equal to the single pass
    det = model(encod, ext=ext, sample=False, n_samples=s)
    torch.testing.assert_close(det.params, one.params.repeat_interleave(s, 0))


@pytest.mark.parametrize("name", ["default", "co_dim0", "ext", "separate_stacks"])
def test_eval_without_sampling_is_deterministic(name):
    enc, gen, shape, _ = CONFIGS[name]
    model = make(enc, gen, dropout=0.3, **shape)
    model.eval()
    encod, _, ext = inputs(model)
    a = model(encod, ext=ext, sample=False)
    torch.manual_seed(123)  # a different RNG state must not matter
    b = model(encod, ext=ext, sample=False)
    for f in ("params", "factors", "gen_states", "ic_mean", "ic_std"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    if a.gen_inputs is not None:
        assert torch.equal(a.gen_inputs, a.co_means)  # no sampling: u is the posterior mean
    # sampling in eval mode, or training mode (dropout), do change the output
    c = model(encod, ext=ext, sample=True)
    assert (c.params - a.params).abs().max() > 0
    model.train()
    d = model(encod, ext=ext, sample=False)
    assert (d.params - a.params).abs().max() > 0


def test_gaussian_readout_width():
    model = make(recon="gaussian", n_out=6)
    assert model.readouts[0].linear.out_features == 6 * 2
    model_p = make(recon="poisson", n_out=6)
    assert model_p.readouts[0].linear.out_features == 6


def test_ext_inputs_drive_the_generator():
    for gen in ({}, {"co_dim": 0}):
        model = make({}, gen, ext_dim=2)
        model.eval()
        assert model.generator.gen.in_dim == model.generator.co_dim + 2
        encod, _, ext = inputs(model)
        a = model(encod, ext=ext, sample=False)
        b = model(encod, ext=ext + 1.0, sample=False)
        assert (a.factors - b.factors).abs().max() > 1e-4
        # the ext input at bin k cannot affect bins before k
        ext2 = ext.clone()
        ext2[:, 4] += 1.0
        c = model(encod, ext=ext2, sample=False)
        torch.testing.assert_close(c.factors[:, :4], a.factors[:, :4])
        assert (c.factors[:, 4:] - a.factors[:, 4:]).abs().max() > 1e-5


def test_separate_and_shared_stacks():
    shared = make({"ic_enc_dim": 6, "ci_enc_dim": 6})
    assert shared.encoder.shared and shared.encoder.rnn.k == 4
    sep = make({"ic_enc_dim": 6, "ci_enc_dim": 4})
    assert not sep.encoder.shared
    assert sep.encoder.rnn.k == 2 and sep.encoder.rnn.hidden == 6
    assert sep.encoder.ci_rnn.k == 2 and sep.encoder.ci_rnn.hidden == 4
    assert sep.encoder.ci_dim == 8
    assert sep.generator.con.in_dim == 8 + BASE_GEN["fac_dim"]
    no_ci = make({"ci_enc_dim": 0})
    assert no_ci.encoder.ci_dim == 0 and getattr(no_ci.encoder, "ci_rnn", None) is None
    assert no_ci.encoder.rnn.k == 2


# --------------------------------------------------------------------------- #
# Information flow in the encoders
# --------------------------------------------------------------------------- #


def encode(model: LFADS, x: torch.Tensor):
    s = model.sessions[0]
    return model.encoder(model.readins[0](x), recon_len=s.t_out, dropout=0.0)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("t_out", [7, 10])
def test_ci_zero_padded_for_forward_bins(shared, t_out):
    model = make({"ci_enc_dim": 6 if shared else 3, "ci_lag": 0}, t_out=t_out)
    model.eval()
    x, _, _ = inputs(model)
    ci = encode(model, x).ci
    assert ci.shape == (3, t_out, model.encoder.ci_dim)
    assert torch.equal(ci[:, 7:], torch.zeros_like(ci[:, 7:]))
    assert (ci[:, :7].abs().sum(-1) > 0).all()  # with lag 0 every encoder bin has information


@pytest.mark.parametrize("lag", [0, 1, 3])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("k", [0, 3, 6])
def test_ci_lag_information_flow(lag, shared, k):
    """Forward half of ci at t sees bins <= t − L; backward half sees bins >= t + L."""
    t_e = 7
    model = make({"ci_enc_dim": 6 if shared else 4, "ci_lag": lag}, t_in=t_e, t_out=9)
    model.eval()
    x, _, _ = inputs(model)
    h = model.encoder.ci_dim // 2
    base = encode(model, x).ci
    x2 = x.clone()
    x2[:, k] += 3.0
    moved = encode(model, x2).ci
    diff = (moved - base).abs().amax(dim=(0,))  # [T_r, 2H]
    fwd, bwd = diff[:, :h].amax(-1), diff[:, h:].amax(-1)
    for t in range(9):
        if t < k + lag or t >= t_e:
            assert fwd[t] == 0, (t, "forward half changed before k+L")
        elif t < t_e:
            assert fwd[t] > 0, (t, "forward half should see bin k")
        if t > k - lag or t >= t_e:
            assert bwd[t] == 0, (t, "backward half changed after k−L")
        elif t >= 0:
            assert bwd[t] > 0, (t, "backward half should see bin k")
    # the lagged-out ends are zero
    assert torch.equal(base[:, :lag, :h], torch.zeros_like(base[:, :lag, :h]))
    assert torch.equal(base[:, t_e - lag:, h:], torch.zeros_like(base[:, t_e - lag:, h:]))


@pytest.mark.parametrize("shared", [True, False])
def test_ic_window_ignores_later_bins(shared):
    t_ic = 3
    model = make({"ic_enc_seq_len": t_ic, "ci_enc_dim": 6 if shared else 4})
    model.eval()
    x, _, _ = inputs(model)
    base = encode(model, x)
    x2 = x.clone()
    x2[:, t_ic:] += 5.0
    moved = encode(model, x2)
    torch.testing.assert_close(moved.ic_mean, base.ic_mean)
    torch.testing.assert_close(moved.ic_std, base.ic_std)
    assert (moved.ci - base.ci).abs().max() > 0  # the controller encoder still sees them
    x3 = x.clone()
    x3[:, 0] += 5.0  # first bin: the backward direction reads it last
    assert (encode(model, x3).ic_mean - base.ic_mean).abs().max() > 0
    x4 = x.clone()
    x4[:, t_ic - 1] += 5.0
    assert (encode(model, x4).ic_mean - base.ic_mean).abs().max() > 0


@pytest.mark.parametrize("shared", [True, False])
def test_ic_window_matches_truncated_input(shared):
    # The IC posterior with ic_enc_seq_len = T_ic equals the one from the first T_ic bins alone.
    t_ic = 4
    model = make({"ic_enc_seq_len": t_ic, "ci_enc_dim": 6 if shared else 4})
    full = make({"ic_enc_seq_len": 0, "ci_enc_dim": 6 if shared else 4}, t_in=t_ic, t_out=t_ic)
    full.load_state_dict(model.state_dict())
    model.eval()
    full.eval()
    x, _, _ = inputs(model)
    a, b = encode(model, x), encode(full, x[:, :t_ic])
    torch.testing.assert_close(a.ic_mean, b.ic_mean)
    torch.testing.assert_close(a.ic_std, b.ic_std)


def test_generator_causal_in_controller_inputs():
    # ci at step t affects factors from t on, never before.
    model = make({"ci_lag": 1})
    model.eval()
    x, _, _ = inputs(model)
    enc = encode(model, x)
    ic = enc.ic_mean
    out = model.generator(ic, enc.ci, None, recon_len=7, sample=False, dropout=0.0)
    ci2 = enc.ci.clone()
    ci2[:, 4] += 1.0
    out2 = model.generator(ic, ci2, None, recon_len=7, sample=False, dropout=0.0)
    torch.testing.assert_close(out2.factors[:, :4], out.factors[:, :4])
    assert (out2.factors[:, 4:] - out.factors[:, 4:]).abs().max() > 0


def test_factor_weights_unit_rows():
    model = make()
    w = model.generator.factor_weights()  # [G, F]
    torch.testing.assert_close(w.norm(dim=0), torch.ones(w.shape[1]))


def test_ci_lag_longer_than_sequence():
    """Edge case: ci_lag >= T_e must give all-zero lagged controller inputs, not a crash."""
    model = make({"ci_lag": 7}, t_in=7)
    model.eval()
    x, _, _ = inputs(model)
    assert torch.equal(encode(model, x).ci, torch.zeros(3, 7, model.encoder.ci_dim))


def test_ci_lag_more_than_sequence():
    model = make({"ci_lag": 9}, t_in=7)
    model.eval()
    x, _, _ = inputs(model)
    assert torch.equal(encode(model, x).ci, torch.zeros(3, 7, model.encoder.ci_dim))
