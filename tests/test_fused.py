"""The fused CPU kernels (lfads_core/model/fused.py, lfads_cpu.cpp) against the autograd path:
the same values and gradients (float64) for the encoder GRUs and the decoder loop in every
configuration, with and without gradients, under vmap (the stacked engine), and the fallback
when they cannot be built."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch.func import grad, vmap

from lfads_core.model import fused
from lfads_core.model.encoder import BiGRUConfig, BiGRUEncoder
from lfads_core.model.generator import GRUGenerator, GRUGeneratorConfig
from lfads_core.model.gru import clip_at, gru_step

pytestmark = pytest.mark.skipif(not fused.load(), reason="the fused CPU kernels could not be built here")


@pytest.fixture
def autograd_path():
    """Run a block with the fused kernels off, whatever happens in it."""
    class Switch:
        def __enter__(self):
            self.before = fused.set_enabled(False)

        def __exit__(self, *exc):
            fused.set_enabled(self.before)
    return Switch()


def reference_sequence(x_zr, x_n, h0, w_hzr, w_hn, clip):
    h, states = h0, []
    for t in range(x_zr.shape[-3]):
        h = gru_step(x_zr[..., t, :, :], x_n[..., t, :, :], h, w_hzr, w_hn, clip_at(t, clip))
        states.append(h)
    return torch.stack(states, dim=-3)


def sequence_inputs(s, steps=7, bsz=5, hidden=4, scale=1.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    return [(r(s, steps, bsz, 2 * hidden) * scale).requires_grad_(),
            (r(s, steps, bsz, hidden) * scale).requires_grad_(),
            (r(s, bsz, hidden) * 3).requires_grad_(),  # initial states beyond the clip
            r(s, hidden, 2 * hidden).requires_grad_(), r(s, hidden, hidden).requires_grad_()]


@pytest.mark.parametrize("s,clip,scale", [(1, 5.0, 1.0), (3, 5.0, 1.0), (1, 0.5, 1.0), (2, 0.3, 3.0),
                                          (1, 1.0, 10.0), (2, 0.0, 3.0)])
def test_gru_sequence_equals_the_autograd_loop(s, clip, scale):
    args = sequence_inputs(s, scale=scale, seed=s)
    weight = torch.randn(s, 7, 5, 4, dtype=torch.float64)
    want = reference_sequence(*args, clip)
    got = fused.gru_sequence(*args, clip)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(torch.autograd.grad((got * weight).sum(), args),
                    torch.autograd.grad((want * weight).sum(), args)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    if clip and clip < 1:
        assert got.abs().max() <= clip  # the clamp binds in these cases
    with torch.no_grad():  # the forward that saves nothing
        torch.testing.assert_close(fused.gru_sequence(*args, clip), want, rtol=1e-12, atol=1e-12)


def test_gru_sequence_float32_matches_float64():
    args = sequence_inputs(2, dtype=torch.float64)
    want = fused.gru_sequence(*args, 5.0)
    got = fused.gru_sequence(*[a.detach().float() for a in args], 5.0)
    torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-5)


def generator_case(config, ext_dim, sample, dropout, train, seed=0, steps=9):
    """Outputs and parameter gradients of a generator for a weighted sum of all its outputs."""
    torch.manual_seed(seed)
    gen = GRUGenerator(config, ic_dim=7, ci_dim=10, ext_dim=ext_dim).double().train(train)
    g = torch.Generator().manual_seed(seed + 1)
    bsz = 5
    ic = torch.randn(bsz, 7, generator=g, dtype=torch.float64) * 2
    ci = torch.randn(bsz, steps, 10, generator=g, dtype=torch.float64)
    ext = torch.randn(bsz, steps, ext_dim, generator=g, dtype=torch.float64) if ext_dim else None
    torch.manual_seed(seed + 2)  # dropout masks and sampling noise
    out = gen(ic, ci, ext, steps, sample, dropout)
    outs = [out.factors, out.gen_states, out.gen_inputs, out.co_means, out.co_stds]
    loss = sum((x * torch.linspace(-1, 1, x.numel(), dtype=x.dtype).view(x.shape)).sum()
               for x in outs if x is not None)
    grads = torch.autograd.grad(loss, list(gen.parameters()), allow_unused=True)
    return outs, grads


@pytest.mark.parametrize("config,ext_dim,sample,dropout,train,steps", [
    (GRUGeneratorConfig(12, 8, 3, 6), 0, True, 0.1, True, 9),  # controller, sampling, dropout
    (GRUGeneratorConfig(12, 8, 3, 6), 2, True, 0.3, True, 9),  # external inputs
    (GRUGeneratorConfig(12, 8, 3, 6), 0, False, 0.1, True, 9),  # posterior means
    (GRUGeneratorConfig(12, 8, 3, 6), 0, True, 0.0, True, 9),  # no dropout masks
    (GRUGeneratorConfig(12, 8, 3, 6), 0, False, 0.1, False, 9),  # evaluation
    (GRUGeneratorConfig(12, 8, 3, 6, cell_clip=0.5), 0, True, 0.1, True, 9),  # clip binds every step
    (GRUGeneratorConfig(12, 0, 0, 6), 0, False, 0.2, True, 9),  # autonomous
    (GRUGeneratorConfig(12, 0, 0, 6), 3, False, 0.0, True, 9),  # autonomous with external inputs
    (GRUGeneratorConfig(12, 8, 3, 6, cell_clip=0.0), 0, True, 0.1, True, 9),  # no clip
    (GRUGeneratorConfig(12, 8, 3, 6), 0, True, 0.1, True, 1),  # one bin
    (GRUGeneratorConfig(12, 0, 0, 6), 0, False, 0.1, True, 1),  # one bin, autonomous
])
def test_generator_fused_equals_autograd(config, ext_dim, sample, dropout, train, steps,
                                         autograd_path):
    got_out, got_grads = generator_case(config, ext_dim, sample, dropout, train, steps=steps)
    with autograd_path:
        want_out, want_grads = generator_case(config, ext_dim, sample, dropout, train, steps=steps)
    for got, want in zip(got_out, want_out):
        assert (got is None) == (want is None)
        if got is not None:
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for got, want in zip(got_grads, want_grads):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("config", [BiGRUConfig(6, 6, 5, 1), BiGRUConfig(6, 4, 5, 2, ic_enc_seq_len=5),
                                    BiGRUConfig(6, 0, 5), BiGRUConfig(6, 6, 5, 0, cell_clip=0.4)])
def test_encoder_fused_equals_autograd(config, autograd_path):
    x = torch.randn(3, 8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def run():
        torch.manual_seed(0)
        enc = BiGRUEncoder(config, in_dim=4).double()
        torch.manual_seed(1)
        out = enc(x, 10, 0.1)
        outs = [out.ic_mean, out.ic_std] + ([out.ci] if out.ci is not None else [])
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view(o.shape)).sum() for o in outs)
        return outs, torch.autograd.grad(loss, list(enc.parameters()))

    got_out, got_grads = run()
    with autograd_path:
        want_out, want_grads = run()
    for got, want in zip(got_out + list(got_grads), want_out + list(want_grads)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_vmap_folds_members_into_the_stack():
    """Under vmap (the stacked engine), with autograd outside (as the engine runs it) and with
    torch.func.grad inside, each member gets its own sequence's values and gradients."""
    members = 3
    per_member = [sequence_inputs(2, seed=10 + i) for i in range(members)]
    stacked = [torch.stack([m[k].detach() for m in per_member]).requires_grad_() for k in range(5)]

    def loss(*args):
        return fused.gru_sequence(*args, 5.0).square().sum()

    losses = vmap(loss, randomness="different")(*stacked)
    losses.sum().backward()
    inner = vmap(grad(loss, argnums=(0, 1, 2, 3, 4)))(*[s.detach() for s in stacked])
    for i, args in enumerate(per_member):
        want = reference_sequence(*args, 5.0).square().sum()
        torch.testing.assert_close(losses[i], want.detach(), rtol=1e-12, atol=1e-12)
        for k, g in enumerate(torch.autograd.grad(want, args)):
            torch.testing.assert_close(stacked[k].grad[i], g, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(inner[k][i], g, rtol=1e-10, atol=1e-12)


def test_fallback_when_the_kernels_cannot_be_built(monkeypatch):
    """No compiler (or any build error): one warning naming the reason, and the autograd path."""
    import torch.utils.cpp_extension as ext

    def broken(**kwargs):
        raise RuntimeError("Error building extension 'lfads_cpu'\nc++: error: no such compiler")

    saved = dict(fused._state)
    monkeypatch.setattr(ext, "load", broken)
    try:
        fused._state["loaded"] = None
        with pytest.warns(RuntimeWarning, match=r"could not be built .c\+\+: error: no such compiler.*autograd path"):
            assert fused.load() is False
        assert not fused.usable(torch.zeros(1))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the warning comes once
            assert fused.load() is False
        torch.manual_seed(0)
        enc = BiGRUEncoder(BiGRUConfig(4, 4, 3), in_dim=2)
        assert enc(torch.randn(2, 5, 2), 5, 0.0).ci.shape == (2, 5, 8)  # runs without the kernels
        fused._state["loaded"] = None
        monkeypatch.setenv("LFADS_FUSED_CPU", "0")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # switched off on purpose: no warning
            assert fused.load() is False
    finally:
        fused._state.update(saved)


def test_a_stale_build_lock_is_removed(tmp_path):
    """A build killed with kill -9 leaves torch's lock file: an old one is removed (a fresh one,
    a build in progress elsewhere, is left alone)."""
    import os
    import time

    lock = tmp_path / "lock"
    lock.write_text("")
    fused._clear_stale_lock(tmp_path)
    assert lock.exists()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    fused._clear_stale_lock(tmp_path)
    assert not lock.exists()
    fused._clear_stale_lock(tmp_path)  # none there: nothing to do


def test_build_folder_depends_on_the_source(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    first = fused.build_dir()
    assert first.parent == tmp_path and first.name.startswith("lfads_cpu_")
    changed = tmp_path / "lfads_cpu.cpp"
    changed.write_text(fused._SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(fused, "_SOURCE", changed)
    assert fused.build_dir() != first
    other = tmp_path / "checkout" / "lfads_cpu.cpp"  # the same source in another checkout
    other.parent.mkdir()
    other.write_text(changed.read_text())
    folder = fused.build_dir()
    monkeypatch.setattr(fused, "_SOURCE", other)
    assert fused.build_dir() != folder  # torch's build file names the source's path


def test_the_loaded_library_is_in_the_folder_build_dir_names():
    """torch's loader appends its link flags to the lists it gets: ours must stay as they were,
    or the folder's name (which hashes them) changes after the first load."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps (not Linux)")
    loaded = [line.split()[-1] for line in maps.read_text().splitlines()
              if line.endswith("lfads_cpu.so")]
    assert loaded and Path(loaded[0]).parent == fused.build_dir(create=False)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_batch_shares_over_threads_give_the_same_results(two_threads, autograd_path):
    """With 2 threads and a batch of >= 32 trials the kernels run the time loop on one share of
    the batch per thread (forward and backward, with and without gradients)."""
    args = sequence_inputs(3, steps=6, bsz=45, hidden=5, seed=4)
    weight = torch.randn(3, 6, 45, 5, dtype=torch.float64)
    want = reference_sequence(*args, 0.5)
    got = fused.gru_sequence(*args, 0.5)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(torch.autograd.grad((got * weight).sum(), args),
                    torch.autograd.grad((want * weight).sum(), args)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    with torch.inference_mode():  # tensors made in inference mode, updated by worker threads
        torch.testing.assert_close(fused.gru_sequence(*[a.detach() for a in args], 0.5), want.detach(),
                                   rtol=1e-12, atol=1e-12)

    def run():
        torch.manual_seed(0)
        gen = GRUGenerator(GRUGeneratorConfig(12, 8, 3, 6), ic_dim=7, ci_dim=10).double()
        g = torch.Generator().manual_seed(5)
        ic = torch.randn(40, 7, generator=g, dtype=torch.float64)
        ci = torch.randn(40, 9, 10, generator=g, dtype=torch.float64)
        torch.manual_seed(6)
        out = gen(ic, ci, None, 9, True, 0.1)
        loss = (out.factors * torch.linspace(-1, 1, out.factors.numel(), dtype=torch.float64)
                .view(out.factors.shape)).sum() + out.co_stds.sum()
        return [out.factors, out.co_means] + list(torch.autograd.grad(loss, list(gen.parameters())))

    got = run()
    with autograd_path:
        want = run()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_status_says_what_a_run_will_use(monkeypatch, tmp_path):
    saved = dict(fused._state)
    try:
        monkeypatch.setenv("LFADS_FUSED_CPU", "0")
        assert fused.status() == "off (LFADS_FUSED_CPU=0)"
        monkeypatch.delenv("LFADS_FUSED_CPU")
        assert fused.status() == "on"  # loaded in this process
        fused._state["loaded"] = None
        monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
        assert fused.status().startswith("compiled on first use")
        assert not any(tmp_path.iterdir())  # asking builds nothing
    finally:
        fused._state.update(saved)


def test_built_without_openmp_where_the_compiler_has_none(monkeypatch, tmp_path):
    """A compiler without OpenMP (Apple's clang): the second build, without it, is used, with no
    warning."""
    import torch.utils.cpp_extension as ext

    calls = []

    def fake(**kwargs):
        calls.append(kwargs["extra_cflags"])
        if "-fopenmp" in kwargs["extra_cflags"]:
            raise RuntimeError("Error building extension 'lfads_cpu'\nclang: error: unsupported option '-fopenmp'")

    saved = dict(fused._state)
    monkeypatch.setattr(ext, "load", fake)
    monkeypatch.setattr(fused, "_register_vmap", lambda: None)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    try:
        fused._state["loaded"] = None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert fused.load() is True
        assert calls == [["-O3", "-fopenmp"], ["-O3"]]
    finally:
        fused._state.update(saved)
