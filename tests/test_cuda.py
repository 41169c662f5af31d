"""Training and sampling on a CUDA device, and the training step as a CUDA graph.

Skipped where there is no CUDA device (run on the GPU machine). The device-independent parts
(``train.device`` resolution and its errors) are tested on the CPU at the end.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lfads_core.assembly import load_data, make_model
from lfads_core.data.batches import batches, to_tensors
from lfads_core.data.synth import make_lorenz, write_h5
from lfads_core.device import resolve_device, use_graphs
from lfads_core.errors import SpecError
from lfads_core.output.sample import posterior_sample
from lfads_core.assembly import training_batches
from lfads_core.spec.load import load_spec
from lfads_core.train.loop import Trainer

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
SMALL = ["model.encoder.ic_enc_dim=16", "model.encoder.ci_enc_dim=8", "model.encoder.ic_dim=8",
         "model.generator.gen_dim=32", "model.generator.con_dim=8", "model.generator.co_dim=2",
         "model.generator.fac_dim=8", "data.batch_size=32", "train.kl.ramp_epochs=0",
         "train.l2.ramp_epochs=0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cuda")
    data = tmp / "lorenz.h5"
    write_h5(make_lorenz(seed=0, n_conditions=8, trials_per_condition=10, n_bins=30, n_neurons=12), data)
    spec = load_spec(REPO / "examples" / "lorenz.yaml", [f"data.path={data}", *SMALL], out=str(tmp / "run"))
    return spec, load_data(spec)


def _no_noise(spec):
    """The spec without dropout or coordinated dropout (for exact comparisons)."""
    import attrs

    model = attrs.evolve(spec.model, dropout_rate=0.0, augmentations=[])
    return attrs.evolve(spec, model=model)


def _deterministic(model):
    """Training steps without posterior sampling (equal random-free steps on any device)."""
    forward = model.forward
    model.forward = lambda *a, **k: forward(*a, **{**k, "sample": False})
    return model


def _trainer(spec, sessions, device, graphs, deterministic=False):
    model, augs = make_model(spec, sessions, device=torch.device(device))
    if deterministic:
        _deterministic(model)
    model.to(device)
    train, valid = training_batches(spec, sessions, torch.device(device), drop_last=graphs)
    return Trainer(model, augs, train, valid, spec.train, log=lambda s: None, graphs=graphs)


@needs_cuda
def test_loss_and_gradients_agree_on_cpu_and_cuda(setup):
    spec, sessions = setup
    spec = _no_noise(spec)
    grads = {}
    for device in ("cpu", "cuda"):
        model, _ = make_model(spec, sessions, device=torch.device(device))  # CUDA: compiled steps (auto)
        model.to(device)
        batch = next(batches(to_tensors(sessions[0].train, device=torch.device(device)), 16))
        out = model(batch.encod, sample=False)
        terms = model.losses(out, batch)
        loss = terms["recon"] + terms["kl_ic"] * 1e-3
        loss.backward()
        grads[device] = (float(loss.detach()), {n: p.grad.detach().cpu() for n, p in model.named_parameters()
                                       if p.grad is not None})
    (l_cpu, g_cpu), (l_gpu, g_gpu) = grads["cpu"], grads["cuda"]
    assert l_gpu == pytest.approx(l_cpu, rel=1e-5)
    assert g_cpu.keys() == g_gpu.keys()
    for name in g_cpu:
        torch.testing.assert_close(g_gpu[name], g_cpu[name], rtol=1e-3, atol=1e-5, msg=name)


@needs_cuda
def test_graph_replay_equals_eager_without_dropout(setup):
    spec, sessions = setup
    spec = _no_noise(spec)
    eager = _trainer(spec, sessions, "cuda", graphs=False, deterministic=True)
    graph = _trainer(spec, sessions, "cuda", graphs=True, deterministic=True)
    # Same batches in both: the eager one drops ragged batches too.
    eager.train_batches.drop_last = True
    for _ in range(2):  # 2 epochs of 2 steps: warm-up, capture, replays
        a, b = eager.run_epoch(), graph.run_epoch()
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert graph.graphs.captured and not graph.graphs.failed
    for (name, p), q in zip(eager.model.named_parameters(), graph.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)


@needs_cuda
def test_compiled_steps_equal_eager_on_cuda_and_replay_in_graphs(setup):
    """train.compile: on: the compiled steps give eager's loss and gradients on CUDA, and a run
    with graphs captures and replays them (the same losses as eager)."""
    import attrs

    from lfads_core.model import steps

    spec, sessions = setup
    spec = _no_noise(spec)
    grads = {}
    for on in (False, True):
        model, _ = make_model(attrs.evolve(spec, train=attrs.evolve(spec.train, compile="on" if on else "off")),
                              sessions)
        model.to("cuda")
        batch = next(batches(to_tensors(sessions[0].train, device=torch.device("cuda")), 16))
        loss = model.losses(model(batch.encod, sample=False), batch)["recon"]
        loss.backward()
        grads[on] = (float(loss.detach()), {n: p.grad.detach().cpu() for n, p in model.named_parameters()
                                            if p.grad is not None})
    assert not steps._failed, steps._failed
    assert grads[True][0] == pytest.approx(grads[False][0], rel=1e-5)
    for name, g in grads[False][1].items():
        torch.testing.assert_close(grads[True][1][name], g, rtol=1e-3, atol=1e-5, msg=name)
    compiled = attrs.evolve(spec, train=attrs.evolve(spec.train, compile="on"))
    eager = _trainer(spec, sessions, "cuda", graphs=False, deterministic=True)
    graph = _trainer(compiled, sessions, "cuda", graphs=True, deterministic=True)
    eager.train_batches.drop_last = True
    for _ in range(2):
        a, b = eager.run_epoch(), graph.run_epoch()
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-4)
    assert graph.graphs.captured and not graph.graphs.failed
    assert not steps._failed, steps._failed  # no step fell back (e.g. past torch's recompile limit)


@needs_cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_gpu_memory_does_not_grow_across_epochs(setup, graphs):
    """Issue 9: nothing grows across epochs. Each graph is captured at its 4th step: here 2
    training steps and 1 validation pass per epoch, so all are captured by the end of epoch 4."""
    spec, sessions = setup
    tr = _trainer(spec, sessions, "cuda", graphs=graphs)
    held = []
    for _ in range(8):
        assert tr.run_epoch() is not None
        torch.cuda.synchronize()
        held.append(torch.cuda.memory_allocated())
    assert max(held[4:]) - min(held[4:]) <= 2**20, held  # within 1 MiB over epochs 5-8


@needs_cuda
def test_hyperparameter_changes_take_effect_in_a_replayed_graph(setup):
    spec, sessions = setup
    tr = _trainer(_no_noise(spec), sessions, "cuda", graphs=True, deterministic=True)
    tr.run_epoch()
    tr.run_epoch()
    assert tr.graphs.captured
    before = [p.detach().clone() for p in tr.model.parameters()]
    tr.set_hparams({"train.lr": 0.0})
    tr.run_epoch()  # replays only: with lr 0 nothing moves
    for p, q in zip(before, tr.model.parameters()):
        assert torch.equal(p, q)
    assert float(tr.optimizer.param_groups[0]["lr"]) == 0.0
    tr.set_hparams({"train.lr": 0.004, "train.kl.ic_scale": 0.5, "train.kl.co_scale": 0.0,
                    "train.l2.gen_scale": 0.0, "train.l2.con_scale": 0.0})
    row = tr.run_epoch()
    assert any(not torch.equal(p, q) for p, q in zip(before, tr.model.parameters()))
    # The replayed loss used the new KL scale: loss = recon + 0.5 kl_ic (+ penalty 0).
    assert row["train_loss"] == pytest.approx(row["train_recon"] + 0.5 * row["train_kl_ic"], rel=1e-4)
    tr.set_hparams({"model.dropout_rate": 0.5})  # a device tensor: the graph draws masks with it
    assert float(tr.model.dropout_rate) == 0.5
    assert tr.run_epoch() is not None


@needs_cuda
def test_non_finite_loss_in_a_graph_rolls_back_the_epoch(setup):
    spec, sessions = setup
    tr = _trainer(spec, sessions, "cuda", graphs=True)
    tr.run_epoch()
    tr.run_epoch()
    assert tr.graphs.captured
    good = [p.detach().clone() for p in tr.model.parameters()]
    source = tr.train_batches

    def poisoned(generator):  # the second batch of the epoch holds NaN
        for i, batch in enumerate(source(generator)):
            yield batch.replace(encod=batch.encod * float("nan")) if i == 1 else batch

    tr.train_batches = poisoned
    assert tr.run_epoch() is None  # caught at the end of the epoch, rolled back to its start
    assert tr.nan_recoveries == 1 and tr.epoch == 2
    for p, q in zip(good, tr.model.parameters()):
        assert torch.equal(p, q)
    assert float(tr.optimizer.param_groups[0]["lr"]) == pytest.approx(spec.train.lr * spec.train.nan.lr_factor)
    tr.train_batches = source
    row = tr.run_epoch()  # the same graphs go on from the restored state
    assert row is not None and np.isfinite(row["train_loss"]) and not tr.graphs.failed


@needs_cuda
def test_resume_across_devices(setup):
    spec, sessions = setup
    gpu = _trainer(spec, sessions, "cuda", graphs=True)
    gpu.run_epoch()
    gpu.run_epoch()
    state = copy.deepcopy(gpu.state_dict())
    cpu = _trainer(spec, sessions, "cpu", graphs=False)
    cpu.load_state_dict(state)
    assert cpu.epoch == 2 and cpu.optimizer.param_groups[0]["lr"] == pytest.approx(spec.train.lr)
    assert cpu.run_epoch() is not None
    back = _trainer(spec, sessions, "cuda", graphs=True)
    back.load_state_dict(copy.deepcopy(cpu.state_dict()))
    row = back.run_epoch()
    assert row is not None and row["epoch"] == 4
    for p, q in zip(cpu.model.parameters(), back.model.parameters()):
        assert p.device.type == "cpu" and q.device.type == "cuda"


@needs_cuda
def test_sampling_on_cuda_matches_cpu_up_to_sampling_noise(setup):
    spec, sessions = setup
    model, _ = make_model(spec, sessions)
    split = to_tensors(sessions[0].valid)
    cpu = posterior_sample(model, split, 200, seed=0)
    cpu_again = posterior_sample(model, split, 200, seed=1)  # the sampling noise between two draws
    model.to("cuda")
    gpu = posterior_sample(model, split, 200, seed=0)
    r2 = lambda a, b: 1 - ((a - b) ** 2).sum() / ((a - a.mean()) ** 2).sum()  # noqa: E731
    for key in ("output_params", "factors"):
        noise = r2(cpu[key], cpu_again[key])
        assert r2(cpu[key], gpu[key]) > noise - 0.03, (key, r2(cpu[key], gpu[key]), noise)
    np.testing.assert_allclose(gpu["ic_mean"], cpu["ic_mean"], rtol=1e-4, atol=1e-5)
    # several passes: each pass's pinned copies are stored while the next pass runs
    passes = posterior_sample(model, split, 200, rows=200 * 7, seed=0)
    for key in ("output_params", "factors"):
        assert r2(cpu[key], passes[key]) > r2(cpu[key], cpu_again[key]) - 0.03, key
    np.testing.assert_allclose(passes["ic_mean"], cpu["ic_mean"], rtol=1e-4, atol=1e-5)


@needs_cuda
def test_a_sampling_pass_out_of_gpu_memory_is_run_again_smaller(setup):
    """A real out-of-memory error (not a mock): 10^6 samples of every trial are far beyond any
    GPU in one pass (~17 KB a trial-sample here), so passes are halved until one fits."""
    spec, sessions = setup
    model, _ = make_model(spec, sessions, device=torch.device("cuda"))
    model.to("cuda")
    split = to_tensors(sessions[0].valid)
    calls, forward = [], model.forward
    model.forward = lambda encod, *a, **k: (calls.append(encod.shape[0]), forward(encod, *a, **k))[1]
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    out = posterior_sample(model, split, 10**6, rows=10**12, seed=0)
    assert calls[0] == split.n_trials and min(calls) < split.n_trials, calls
    assert out["factors"].shape[0] == split.n_trials and np.isfinite(out["factors"]).all()
    assert torch.cuda.memory_allocated() - before < 2**20


@needs_cuda
def test_cli_run_on_cuda_with_graphs(setup, tmp_path):
    spec, _ = setup
    env = {**os.environ, "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", str(REPO / "examples" / "lorenz.yaml"),
                          "--set", f"data.path={spec.data.path}", *[x for s in SMALL for x in ("--set", s)],
                          "--set", "train.max_epochs=3", "--set", "sampling.num_samples=5",
                          "--device", "cuda", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "CUDA graphs, compiled steps" in res.stdout and "warning" not in res.stdout, res.stdout
    assert "compiling" not in res.stderr, res.stderr  # train.compile: auto compiled them all
    assert (tmp_path / "run" / "lfads_output.h5").exists()
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", "validate", str(REPO / "examples" / "lorenz.yaml"),
                          "--set", f"data.path={spec.data.path}", "--device", "cuda"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "CUDA graphs on; compiled steps on (train.device: cuda, train.compile: auto)" in res.stdout, res.stdout


# -- on any machine -------------------------------------------------------------------------
def test_device_resolution_and_errors(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda:0") if CUDA else torch.device("cpu"))
    assert not use_graphs("on", torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SpecError, match="train.device: cuda asked for, but"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SpecError, match=r"cuda:3 asked for, but there is only 1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.skipif(CUDA, reason="checks the message where there is no CUDA device")
def test_cli_cuda_without_cuda_is_one_line_and_validate_names_the_device(setup, tmp_path):
    spec, _ = setup
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MPLBACKEND": "Agg"}
    base = [sys.executable, "-m", "lfads_core.cli"]
    args = [str(REPO / "examples" / "lorenz.yaml"), "--set", f"data.path={spec.data.path}",
            *[x for s in SMALL for x in ("--set", s)]]
    res = subprocess.run([*base, *args, "--device", "cuda", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1
    assert "train.device: cuda asked for, but" in res.stderr
    assert not (tmp_path / "run").exists()  # nothing written
    res = subprocess.run([*base, "validate", *args, "--device", "cpu"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "device: cpu (1 thread; train.device: cpu)" in res.stdout


def _stacked_pair(spec, sessions, device, graphs):
    """A stacked group of two members on ``device`` without noise (no dropout, no coordinated
    dropout, posterior means), with different learning rates."""
    import attrs

    from lfads_core.pbt.members import build_member
    from lfads_core.train.stacked import StackedTrainer

    quiet = attrs.evolve(_no_noise(spec), train=attrs.evolve(spec.train, device=device,
                                                             cuda_graphs="on" if graphs else "off"))
    trainers = [build_member(quiet, sessions, m, {"train.lr": 0.002 * (m + 1)}) for m in range(2)]
    group = StackedTrainer(trainers, log=lambda s: None, graphs=graphs)
    group.sample = False
    group._hparams()
    return group


def _stacked_steps(group, batches_, n):
    from lfads_core.train.stacked import stack_batches

    group.base.train(True)
    for i in range(n):
        b = batches_[i % len(batches_)]
        b = type(b)(**{k: (v.to(group.device) if isinstance(v, torch.Tensor) else v)
                       for k, v in vars(b).items()})
        stacked = stack_batches([b, b])
        if group.graphs is not None:
            group.graphs.step(stacked, True)
        else:
            group._step(stacked, True)
    return {k: v.detach().cpu() for k, v in group.params.items()}


@needs_cuda
def test_stacked_steps_agree_on_cpu_and_cuda_and_with_graphs(setup):
    spec, sessions = setup
    torch.manual_seed(0)
    data = to_tensors(sessions[0].train)
    fixed = list(batches(data, spec.data.batch_size, torch.Generator().manual_seed(0)))[:2]
    fixed = [b for b in fixed if b.encod.shape[0] == spec.data.batch_size]
    cpu = _stacked_steps(_stacked_pair(spec, sessions, "cpu", False), fixed, 6)
    eager = _stacked_steps(_stacked_pair(spec, sessions, "cuda", False), fixed, 6)
    group = _stacked_pair(spec, sessions, "cuda", True)
    graphs = _stacked_steps(group, fixed, 6)
    assert group.graphs.captured and group.graphs.failed is None
    for k in cpu:
        torch.testing.assert_close(eager[k], cpu[k], rtol=2e-3, atol=2e-5, msg=k)
        torch.testing.assert_close(graphs[k], eager[k], rtol=2e-3, atol=2e-5, msg=k)


@needs_cuda
def test_stacked_group_size_comes_from_the_gpu_memory(setup):
    import attrs

    from lfads_core.pbt.members import build_member
    from lfads_core.train.stacked import group_size, member_memory

    spec, sessions = setup
    cuda_spec = attrs.evolve(spec, train=attrs.evolve(spec.train, device="cuda"))
    per = member_memory(lambda: build_member(cuda_spec, sessions, 0, {}))
    free = torch.cuda.mem_get_info()[0]
    assert 0 < per < free
    assert group_size(10**6, per, free) == int(0.7 * free // per)


@needs_cuda
def test_augmentations_draw_the_same_on_cuda_through_pinned_copies(setup):
    """Coordinated dropout and sample validation give the same batch on CUDA as on the CPU
    (drawn on the CPU, copied with lfads_core.to_device); batch indices stay on the CPU."""
    from lfads_core import AugmentContext, to_device
    from lfads_core.model.augment import CoordinatedDropout, CoordinatedDropoutConfig
    from lfads_core.model.sample_validation import SampleValidation, SampleValidationConfig

    spec, sessions = setup
    x = torch.rand(64, 30, 12)
    moved = to_device(x, "cuda")
    x += 1.0  # the copy is the tensor as it was
    torch.testing.assert_close(moved.cpu(), x - 1.0)
    augs = [SampleValidation(SampleValidationConfig(fraction=0.2)),
            CoordinatedDropout(CoordinatedDropoutConfig(rate=0.3))]
    out = {}
    for device in ("cpu", "cuda"):
        data = to_tensors(sessions[0].train).to(torch.device(device))
        batch = next(iter(batches(data, 16, torch.Generator().manual_seed(1))))
        assert batch.index.device.type == "cpu" and batch.encod.device.type == device
        for aug in augs:
            batch = aug(batch, AugmentContext(True, 1, torch.Generator().manual_seed(5)))
        out[device] = {k: getattr(batch, k).cpu() for k in ("encod", "loss_mask", "grad_mask", "score_mask")}
    for k, v in out["cpu"].items():
        assert torch.equal(out["cuda"][k], v), k
