"""Compiled recurrent steps (train.compile: on; lfads_core/model/steps.py) against the autograd
path: the same values and gradients (float64, on the CPU with the fused kernels off, compiled
by torch.compile's CPU backend), the fallback where compiling fails, and the spec switch."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from lfads_core.model import fused, steps
from lfads_core.model.encoder import BiGRUConfig, BiGRUEncoder
from lfads_core.model.generator import GRUGenerator, GRUGeneratorConfig
from lfads_core.model.gru import StackedGRU

sys.path.insert(0, str(Path(__file__).parent))
from test_fused import generator_case  # noqa: E402 - a generator's outputs and gradients


@pytest.fixture
def autograd_path():
    before = fused.set_enabled(False)
    yield
    fused.set_enabled(before)


def _compiled(cls, on: bool):
    class Switch:
        def __enter__(self):
            self.before = cls.compile_steps
            cls.compile_steps = on

        def __exit__(self, *exc):
            cls.compile_steps = self.before
    return Switch()


def _assert_same(got, want):
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("config,ext_dim,sample,dropout", [
    (GRUGeneratorConfig(12, 8, 3, 6), 2, True, 0.3),  # controller, external inputs, sampling, dropout
    (GRUGeneratorConfig(12, 0, 0, 6, cell_clip=0.5), 0, False, 0.1),  # autonomous, clip binds every step
])
def test_compiled_generator_equals_autograd(config, ext_dim, sample, dropout, autograd_path):
    want_out, want_grads = generator_case(config, ext_dim, sample, dropout, True)
    with _compiled(GRUGenerator, True):
        got_out, got_grads = generator_case(config, ext_dim, sample, dropout, True)
    assert not steps._failed
    _assert_same(got_out, want_out)
    _assert_same(got_grads, want_grads)


def test_compiled_encoder_equals_autograd(autograd_path):
    x = torch.randn(3, 8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def run():
        torch.manual_seed(0)
        enc = BiGRUEncoder(BiGRUConfig(6, 6, 5, 1), in_dim=4).double()
        torch.manual_seed(1)
        out = enc(x, 10, 0.1)
        outs = [out.ic_mean, out.ic_std, out.ci]
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view(o.shape)).sum() for o in outs)
        return outs + list(torch.autograd.grad(loss, list(enc.parameters())))

    want = run()
    with _compiled(StackedGRU, True):
        got = run()
    assert not steps._failed
    _assert_same(got, want)


def _compiled_calls_raise(monkeypatch, error: Exception) -> None:
    """torch.compile's functions raise ``error`` when called; nothing compiled or failed yet."""
    def compile_(fn, **kwargs):
        def call(*args):
            raise error
        return call

    monkeypatch.setattr(torch, "compile", compile_)
    monkeypatch.setattr(steps, "_compiled", {})
    monkeypatch.setattr(steps, "_failed", {})


def test_a_failing_compile_warns_once_and_runs_uncompiled(monkeypatch, autograd_path):
    _compiled_calls_raise(monkeypatch, RuntimeError("Cannot find a working triton installation"))
    config = GRUGeneratorConfig(12, 0, 0, 6)
    want = generator_case(config, 0, False, 0.0, True, steps=3)
    with _compiled(GRUGenerator, True):
        with pytest.warns(RuntimeWarning, match=r"compiling gru_cell failed .RuntimeError: Cannot find a "
                                                r"working triton installation.; running it uncompiled"):
            got = generator_case(config, 0, False, 0.0, True, steps=3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            generator_case(config, 0, False, 0.0, True, steps=3)
    _assert_same(got[0] + list(got[1]), want[0] + list(want[1]))


def _lorenz_spec(tmp_path, *overrides: str):
    """The spec of examples/lorenz.yaml on tiny Lorenz data (written once per ``tmp_path``)."""
    from lfads_core.data.synth import make_lorenz, write_h5
    from lfads_core.spec.load import load_spec

    data = tmp_path / "l.h5"
    if not data.exists():
        write_h5(make_lorenz(seed=0, n_conditions=2, trials_per_condition=5, n_bins=10, n_neurons=6), data)
    spec_path = Path(__file__).resolve().parents[1] / "examples" / "lorenz.yaml"
    return load_spec(spec_path, [f"data.path={data}", *overrides], out=str(tmp_path / "run"))


def _lorenz_model(tmp_path, compile_: str, device=None):
    """The model of :func:`_lorenz_spec` with ``train.compile: compile_``, to be trained on
    ``device`` (default: the spec's): (model, sessions)."""
    from lfads_core.assembly import load_data, make_model

    spec = _lorenz_spec(tmp_path, f"train.compile={compile_}")
    sessions = load_data(spec)
    return make_model(spec, sessions, device=device)[0], sessions


@pytest.mark.parametrize("value,device,want", [
    ("on", None, True), ("off", None, False),
    ("auto", torch.device("cpu"), False),  # the CPU has its fused kernels
    ("auto", torch.device("cuda", 0), True),  # a GPU is launch-bound: compiled (needs no GPU here)
    ("off", torch.device("cuda", 0), False), ("on", torch.device("cpu"), True)])
def test_the_spec_switches_the_core_components(tmp_path, monkeypatch, value, device, want):
    monkeypatch.setattr("lfads_core.device.has_triton", lambda: True)
    model, _ = _lorenz_model(tmp_path, value, device)
    flags = [m.compile_steps for m in steps._switchable(model)]
    assert len(flags) == 2 and all(f is want for f in flags)  # the generator and the encoder's GRUs
    assert GRUGenerator.compile_steps is False and StackedGRU.compile_steps is False  # classes untouched


def test_any_component_declaring_the_attribute_gets_the_switch():
    class Recurrence(torch.nn.Module):  # e.g. a plugin's generator
        compile_steps = False

    outer = torch.nn.Sequential(torch.nn.Linear(2, 2), Recurrence())
    steps.compile_steps(outer, True)
    assert outer[1].compile_steps is True and Recurrence.compile_steps is False
    assert not hasattr(outer[0], "compile_steps")
    steps.compile_steps(outer, False)
    assert outer[1].compile_steps is False


def test_out_of_memory_in_a_compiled_step_is_not_taken_for_a_failed_compile(monkeypatch):
    _compiled_calls_raise(monkeypatch, torch.OutOfMemoryError("CUDA out of memory"))
    x = torch.zeros(2, 6)
    with pytest.raises(torch.OutOfMemoryError):
        steps.run(steps.gru_cell, x, x[:, :3], x[:, :3], torch.zeros(3, 6), torch.zeros(3, 3), 5.0)
    assert not steps._failed


def test_a_failure_while_a_cuda_graph_is_captured_is_not_taken_for_a_failed_compile(monkeypatch):
    """Capturing is then broken, not compiling: the error goes to the graphs' fallback and the
    steps stay compiled for the eager steps after it."""
    _compiled_calls_raise(monkeypatch, RuntimeError("operation not permitted when stream is capturing"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    x = torch.zeros(2, 6)
    with pytest.raises(RuntimeError, match="stream is capturing"):
        steps.run(steps.gru_cell, x, x[:, :3], x[:, :3], torch.zeros(3, 6), torch.zeros(3, 3), 5.0)
    assert not steps._failed


def test_posterior_sampling_runs_the_steps_uncompiled(tmp_path, monkeypatch, autograd_path):
    from lfads_core.data.batches import to_tensors
    from lfads_core.output.sample import posterior_sample

    model, sessions = _lorenz_model(tmp_path, "on")

    def compiled(fn, *args):
        raise AssertionError(f"sampling ran {fn.__name__} compiled")

    monkeypatch.setattr(steps, "run", compiled)
    out = posterior_sample(model, to_tensors(sessions[0].valid), num_samples=3)
    assert out["factors"].shape[:2] == (sessions[0].valid.encod.shape[0], 10)
    flags = [m.compile_steps for m in steps._switchable(model)]
    assert len(flags) == 2 and all(flags)  # on again for training
    model.train()
    with pytest.raises(AssertionError, match="ran .* compiled"):  # training does compile
        model(to_tensors(sessions[0].train).encod[:4], session=0)


def _tanh_step(x: torch.Tensor, h: torch.Tensor, clip: float) -> torch.Tensor:
    return torch.tanh(x + h).clamp(-clip, clip)


def test_a_step_compiles_for_more_variants_than_torchs_default_limit():
    """A model's steps meet state with and without gradient, training and validation, several
    GRU and batch sizes: more than torch's default of 8 compiled variants per function (on the GPU
    machine the test model's gru_cell fell back to uncompiled at the 9th). steps.run allows
    steps.VARIANTS."""
    variants = 0
    for dtype in (torch.float32, torch.float64):
        for grad_mode in (True, False):
            for needs_grad in (True, False):
                for batch in (3, 5):
                    x = torch.randn(batch, 4, dtype=dtype)
                    h = torch.randn(batch, 4, dtype=dtype, requires_grad=needs_grad)
                    with torch.set_grad_enabled(grad_mode):
                        got = steps.run(_tanh_step, x, h, 0.5)
                    torch.testing.assert_close(got, _tanh_step(x, h, 0.5))
                    variants += 1
    assert variants > 8
    assert _tanh_step not in steps._failed, steps._failed.get(_tanh_step)


def test_spec_default_compiles_where_training_runs_on_cuda(tmp_path, monkeypatch):
    """train.compile defaults to auto; with no device given, make_model decides by the device
    train.device resolves to (here: the CPU, so not compiled)."""
    from lfads_core.device import use_compile
    from lfads_core.spec.schema import TrainSpec

    assert TrainSpec().compile == "auto"
    monkeypatch.setattr("lfads_core.device.has_triton", lambda: True)
    assert [use_compile(s, torch.device(d)) for s in ("auto", "on", "off") for d in ("cpu", "cuda")] == \
        [False, True, True, True, False, False]
    monkeypatch.setattr("lfads_core.device.has_triton", lambda: False)  # e.g. torch on Windows
    assert [use_compile(s, torch.device("cuda")) for s in ("auto", "on", "off")] == [False, True, False]
    if not torch.cuda.is_available():
        model, _ = _lorenz_model(tmp_path, "auto")
        assert not any(m.compile_steps for m in steps._switchable(model))


def test_the_component_check_runs_the_steps_uncompiled(tmp_path, monkeypatch, autograd_path):
    """check_components (lfads-run and validate, before training) runs on the CPU: with
    compiled steps on (a GPU run) it must not compile them there (on the GPU machine the CLI
    test took 107 s instead of 12 with the fused kernels off)."""
    from lfads_core.assembly import check_components, load_data, make_model

    spec = _lorenz_spec(tmp_path, "train.compile=on")
    sessions = load_data(spec)
    model, augs = make_model(spec, sessions)
    calls = []
    monkeypatch.setattr(steps, "run", lambda fn, *args: calls.append(fn) or fn(*args))
    check_components(spec, sessions, model, augs)
    assert calls == []
    assert all(m.compile_steps for m in steps._switchable(model))


@pytest.mark.parametrize("fused_on", [True, False])
def test_the_run_says_compiled_steps_only_where_they_run(tmp_path, monkeypatch, fused_on):
    """``train.compile: on`` on the CPU: where the fused kernels run they take the steps'
    place, and the run's first line must not claim compiled steps."""
    from lfads_core.run import train

    spec = _lorenz_spec(tmp_path, "train.compile=on", "train.max_epochs=1", "sampling.num_samples=2",
                        "sampling.plots=false", "train.device=cpu")
    monkeypatch.setattr(steps, "run", lambda fn, *args: fn(*args))  # what it says, not compiling
    before = fused.set_enabled(fused_on)
    try:
        lines: list[str] = []
        train(spec, log=lines.append)
    finally:
        fused.set_enabled(before)
    first = next(line for line in lines if line.startswith("training on"))
    assert ("compiled steps" in first) is (not fused_on or not fused.load()), first


def test_the_compilers_tf32_advice_is_not_shown(recwarn):
    """torch's inductor advises TF32 at the first compile on a recent GPU (seen on the H100, on
    stderr of every run); lfads keeps float32 products on purpose, so the advice is noise."""
    def double(x):  # a function compiled for the first time here
        return x * 2

    steps.run(double, torch.ones(2, 3))
    warnings.warn("TensorFloat32 tensor cores for float32 matrix multiplication available but not "
                  "enabled. Consider setting `torch.set_float32_matmul_precision('high')` for better "
                  "performance.", UserWarning)
    warnings.warn("another warning", UserWarning)
    assert [str(w.message) for w in recwarn] == ["another warning"]
