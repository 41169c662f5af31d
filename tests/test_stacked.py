"""The stacked population engine (pbt.engine: stacked): a member of the stacked model equals the
single model, the vectorised Adam equals torch.optim.Adam member by member, exploits copy one
member's state, a NaN stays in its member, a model that cannot be stacked falls back to trials,
and a whole population trains and resumes through the CLI."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lfads_core.train.stacked import StackedTrainer, group_size, stack_batches
from lfads_core.train.vadam import StackedAdam, clip_member_norms

sys.path.insert(0, str(Path(__file__).parent))
from test_pbt import _spec  # noqa: E402 - the tiny population spec of the AutoLFADS tests

ENV = {"OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"}


def _members(tmp_path, n, hparams=None, **pbt):
    from lfads_core.assembly import load_data
    from lfads_core.pbt.members import build_member

    _, spec = _spec(tmp_path, pbt)
    sessions = load_data(spec)
    hparams = hparams or [{} for _ in range(n)]
    return spec, sessions, [build_member(spec, sessions, m, hparams[m]) for m in range(n)]


def _no_augmentations(trainers):
    for t in trainers:
        t.augmentations, t.aug_rngs = [], []


def _two_sessions(tmp_path, spec):
    """``spec`` over two sessions (copies of its data file, day1.h5 and day2.h5), shared batches."""
    import shutil

    import attrs

    for name in ("day1.h5", "day2.h5"):
        shutil.copy(spec.data.path, tmp_path / name)
    return attrs.evolve(spec, data=attrs.evolve(spec.data, path=str(tmp_path / "day*.h5")),
                        pbt=attrs.evolve(spec.pbt, stacked_batches="shared"))


@pytest.mark.parametrize("P", [1, 3])
def test_a_member_of_the_stack_computes_the_single_models_loss_and_gradients(tmp_path, P):
    _, _, trainers = _members(tmp_path, P, [{"model.dropout_rate": 0.0, "train.kl.ic_scale": 1e-3 * (m + 1)}
                                            for m in range(P)])
    group = StackedTrainer(trainers, log=lambda s: None)
    group.sample = False
    batch = next(iter(trainers[0].train_batches(torch.Generator().manual_seed(1))))
    group.base.train(True)
    terms = group._forward(stack_batches([batch] * P))
    terms["loss"].sum().backward()
    for i, t in enumerate(trainers):
        t.model.train(True)
        out = t.model(batch.encod, session=0, sample=False)
        single = t.model.losses(out, batch)
        loss = t._total(single)
        loss.backward()
        assert float(terms["loss"][i].detach()) == pytest.approx(float(loss.detach()), rel=1e-5)
        for k in ("recon", "kl_ic", "kl_co"):
            assert float(terms[k][i].detach()) == pytest.approx(float(single[k].detach()), rel=1e-5, abs=1e-7)
        for name, p in t.model.named_parameters():
            if p.grad is None:
                assert group.params[name].grad is None or not group.params[name].grad[i].any()
                continue
            assert group.params[name].grad is not None, name
            torch.testing.assert_close(group.params[name].grad[i], p.grad, rtol=1e-4, atol=1e-6)


def test_a_stacked_training_step_equals_each_members_own_step(tmp_path):
    """Forward, backward, per-member clipping (member 1 clipped, member 0 not) and Adam with
    each member's learning rate: the weights after three steps equal the single models'."""
    hp = [{"model.dropout_rate": 0.0, "train.lr": 0.01}, {"model.dropout_rate": 0.0, "train.lr": 0.002}]
    spec, sessions, trainers = _members(tmp_path, 2, hp)
    _no_augmentations(trainers)
    from lfads_core.pbt.members import build_member

    single = [build_member(spec, sessions, m, hp[m]) for m in range(2)]
    _no_augmentations(single)
    for t in trainers + single:
        t.sample = False
        t.spec = type(t.spec)(**{**{a.name: getattr(t.spec, a.name) for a in t.spec.__attrs_attrs__},
                                 "grad_clip": 50.0})
    group = StackedTrainer(trainers, log=lambda s: None)
    group.sample = False
    group._hparams()
    batches = list(trainers[0].train_batches(torch.Generator().manual_seed(3)))[:3]
    norms = []
    for batch in batches:
        group.base.train(True)
        _, n = group._step(stack_batches([batch, batch]), True)
        norms.append(n)
        for t in single:
            t.model.train(True)
            t._step(batch, True)
    assert float(norms[0][0]) != pytest.approx(float(norms[0][1]))
    group.store()
    for t, s in zip(trainers, single):
        for (name, p), q in zip(t.model.named_parameters(), s.model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
        st_a, st_b = t.optimizer.state_dict()["state"], s.optimizer.state_dict()["state"]
        assert float(st_a[0]["step"]) == float(st_b[0]["step"]) == 3.0
        torch.testing.assert_close(st_a[0]["exp_avg_sq"], st_b[0]["exp_avg_sq"], rtol=1e-4, atol=1e-10)


def test_stacked_steps_over_several_sessions_equal_each_members_own_steps(tmp_path):
    """Shared batches of two sessions: a step trains one session's readin and readout; the
    other session's are left alone (no Adam step, momentum or step count), as in the single
    model, so the weights and Adam states after alternating steps equal the single models'."""
    from lfads_core.assembly import load_data
    from lfads_core.pbt.members import build_member

    hp = [{"model.dropout_rate": 0.0, "train.lr": 0.01}, {"model.dropout_rate": 0.0, "train.lr": 0.002}]
    spec = _two_sessions(tmp_path, _spec(tmp_path, {"engine": "stacked"})[1])
    sessions = load_data(spec)
    trainers = [build_member(spec, sessions, m, hp[m]) for m in range(2)]
    single = [build_member(spec, sessions, m, hp[m]) for m in range(2)]
    for t in trainers + single:
        t.sample = False
    _no_augmentations(trainers + single)
    group = StackedTrainer(trainers, batches="shared", log=lambda s: None)
    group.sample = False
    steps = list(trainers[0].train_batches(torch.Generator().manual_seed(3)))[:4]
    steps = [steps[0]] * 2 + [b for b in steps if b.session != steps[0].session][:1] + [steps[0]]
    assert len({b.session for b in steps}) == 2
    for batch in steps:
        group.base.train(True)
        group._step(stack_batches([batch, batch]), True)
        for t in single:
            t.model.train(True)
            t._step(batch, True)
    group.store()
    for t, s in zip(trainers, single):
        for (name, p), q in zip(t.model.named_parameters(), s.model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
        st_a, st_b = t.optimizer.state_dict()["state"], s.optimizer.state_dict()["state"]
        assert sorted(st_a) == sorted(st_b)  # the same weights have Adam state
        assert {k: float(v["step"]) for k, v in st_a.items()} == {k: float(v["step"]) for k, v in st_b.items()}
        assert {float(v["step"]) for v in st_b.values()} == {4.0, 3.0, 1.0}  # shared; the sessions
        for k in st_a:
            torch.testing.assert_close(st_a[k]["exp_avg"], st_b[k]["exp_avg"], rtol=1e-4, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(lrs=st.lists(st.floats(1e-4, 0.1), min_size=1, max_size=4), wd=st.sampled_from([0.0, 0.01]),
       unused=st.lists(st.booleans(), min_size=1, max_size=4), seed=st.integers(0, 1000))
def test_vectorised_adam_equals_torch_adam_member_by_member(lrs, wd, unused, seed):
    """Also where a parameter has no gradient in some steps (``unused``: a step's ``b`` gets
    none, as another session's readout does): left alone, its own step count behind."""
    gen = torch.Generator().manual_seed(seed)
    P = len(lrs)
    stacked = {"w": torch.randn(P, 5, 3, generator=gen), "b": torch.randn(P, 3, generator=gen)}
    singles = [{k: v[i].clone().requires_grad_(True) for k, v in stacked.items()} for i in range(P)]
    opts = [torch.optim.Adam(list(s.values()), lr=lr, eps=1e-8, weight_decay=wd) for s, lr in zip(singles, lrs)]
    adam = StackedAdam(stacked, eps=1e-8, weight_decay=wd)
    for skip in unused:
        grads = {k: torch.randn(v.shape, generator=gen) for k, v in stacked.items()}
        if skip:
            grads["b"] = None
        adam.step(grads, torch.tensor(lrs))
        for i, (s, opt) in enumerate(zip(singles, opts)):
            for k, p in s.items():
                p.grad = None if grads[k] is None else grads[k][i].clone()
            opt.step()
    assert adam.steps["b"].tolist() == [float(unused.count(False))] * P
    for i, s in enumerate(singles):
        for k, p in s.items():
            torch.testing.assert_close(stacked[k][i], p.detach(), rtol=1e-5, atol=1e-6)
            if p in opts[i].state:
                torch.testing.assert_close(adam.exp_avg[k][i], opts[i].state[p]["exp_avg"])
                assert float(opts[i].state[p]["step"]) == adam.steps[k][i]
            else:
                assert adam.steps[k][i] == 0 and not adam.exp_avg[k][i].any()


def test_vectorised_adam_leaves_inactive_members_alone_and_clips_per_member():
    stacked = {"w": torch.ones(3, 4)}
    adam = StackedAdam(stacked)
    adam.step({"w": torch.ones(3, 4)}, torch.full((3,), 0.1), torch.tensor([True, False, True]))
    assert adam.steps["w"].tolist() == [1.0, 0.0, 1.0]
    assert torch.equal(stacked["w"][1], torch.ones(4)) and not adam.exp_avg["w"][1].any()
    assert torch.allclose(stacked["w"][0], torch.full((4,), 0.9))
    grads = {"a": torch.tensor([[3.0, 4.0], [0.3, 0.4]]), "b": None}
    norms = clip_member_norms(grads, 1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(grads["a"], torch.tensor([[0.6, 0.8], [0.3, 0.4]]), atol=1e-5, rtol=0)


def test_member_batches_follow_each_members_generator_and_shared_the_first(tmp_path):
    _, _, trainers = _members(tmp_path, 2)
    starts = [t.data_rng.get_state() for t in trainers]
    group = StackedTrainer(trainers, batches="member", log=lambda s: None)
    steps = list(group._member_batches(True))
    assert any(not torch.equal(a.index, b.index) for a, b in steps)
    assert all(not torch.equal(t.data_rng.get_state(), s) for t, s in zip(trainers, starts))
    group = StackedTrainer(trainers, batches="shared", log=lambda s: None)
    before = trainers[1].data_rng.get_state()
    assert all(a is b for a, b in group._member_batches(True))
    assert torch.equal(trainers[1].data_rng.get_state(), before)


class _Poison:
    """An augmentation that makes a member's input NaN in one batch of one epoch (once)."""

    def __init__(self, epoch):
        self.epoch, self.done = epoch, False

    def __call__(self, batch, ctx):
        if ctx.training and ctx.epoch == self.epoch and not self.done:
            self.done = True
            return batch.replace(encod=batch.encod * float("nan"))
        return batch


def _train(tmp_path, poison: bool):
    from lfads_core.pbt.members import train_stacked

    torch.manual_seed(0)
    _, _, trainers = _members(tmp_path, 3)
    if poison:
        trainers[1].augmentations.append(_Poison(epoch=2))
        trainers[1].aug_rngs.append(torch.Generator())
    group = StackedTrainer(trainers, log=lambda s: None)
    torch.manual_seed(1)
    train_stacked(group, 1)
    before = {n: p.detach().clone() for n, p in trainers[1].model.named_parameters()}
    lr = trainers[1].hparams["train.lr"]
    results = train_stacked(group, 1)
    return trainers, results, before, lr


def test_a_nan_in_one_member_rolls_back_that_member_only(tmp_path):
    clean, _, _, _ = _train(tmp_path, poison=False)
    trainers, results, before, lr = _train(tmp_path, poison=True)
    assert all("fitness" in r for r in results)
    t = trainers[1]
    assert t.nan_recoveries == 1 and t.hparams["train.lr"] == pytest.approx(lr * t.spec.nan.lr_factor)
    assert len(t.history) == 2  # the rolled-back epoch trained again
    for m in (0, 2):  # the others trained exactly as without the poisoned member
        assert trainers[m].nan_recoveries == 0 and len(trainers[m].history) == 2
        for p, q in zip(trainers[m].model.parameters(), clean[m].model.parameters()):
            assert torch.equal(p, q)
    assert all(math.isfinite(v) for v in t.history[-1].values() if isinstance(v, float))
    assert any(not torch.equal(p, before[n]) for n, p in t.model.named_parameters())


def test_exploit_copies_exactly_one_members_state_into_the_stack(tmp_path):
    from lfads_core.pbt.members import cpu_state, train_stacked

    _, _, trainers = _members(tmp_path, 3)
    group = StackedTrainer(trainers, log=lambda s: None)
    train_stacked(group, 1)
    others = {m: {n: p.detach().clone() for n, p in group.params.items()} for m in (0, 2)}
    trainers[1].adopt(cpu_state(trainers[2].state_dict()), {"train.lr": 0.0009})
    group.load()
    for n, p in group.params.items():
        assert torch.equal(p[1], p[2]), n
        assert torch.equal(p[0], others[0][n][0]) and torch.equal(p[2], others[2][n][2])
    for n in group.trainable:
        assert torch.equal(group.adam.exp_avg[n][1], group.adam.exp_avg[n][2])
        assert group.adam.steps[n][1] == group.adam.steps[n][2]
    assert group.lr.tolist() == pytest.approx([trainers[0].hparams["train.lr"], 0.0009,
                                               trainers[2].hparams["train.lr"]])


def test_a_model_that_cannot_be_stacked_falls_back_to_trials_with_one_warning(tmp_path, monkeypatch):
    from lfads_core.assembly import load_data
    from lfads_core.model import readio
    from lfads_core.pbt.runners import LocalRunner

    _, spec = _spec(tmp_path, {"engine": "stacked"})
    sessions = load_data(spec)
    cls = readio.IdentityReadin
    original = cls.forward

    def host_read(self, x):  # a component that reads a tensor on the host: vmap refuses
        float(x.sum())
        return original(self, x)

    monkeypatch.setattr(cls, "forward", host_read)
    runner = LocalRunner(spec, sessions)
    runner.create({m: {} for m in range(2)})
    results = runner.train(1)
    assert all("fitness" in r for r in results.values())
    assert "cannot run stacked" in results[0]["warning"] and "trials" in results[0]["warning"]
    assert runner.host.engine == "trials"
    assert "warning" not in runner.train(1)[0]  # once


@pytest.mark.parametrize("n_sessions", [1, 2])
def test_a_resumed_stacked_population_computes_what_an_uninterrupted_one_does(tmp_path, n_sessions):
    """Forming the groups again after a resume (their check draws random numbers) changes no
    member's random stream, and no state lives in the group alone (with two sessions, gradients
    kept from earlier steps once moved the other session's weights): the next generation's
    numbers are those of the uninterrupted run."""
    import copy

    from lfads_core.assembly import load_data
    from lfads_core.pbt.runners import Host

    _, spec = _spec(tmp_path, {"engine": "stacked"})
    if n_sessions == 2:
        spec = _two_sessions(tmp_path, spec)
    sessions = load_data(spec)
    assert len(sessions) == n_sessions
    hparams = {0: {"train.lr": 0.004}, 1: {"train.lr": 0.002}, 2: {"train.lr": 0.003}}
    going = Host(spec, sessions)
    for m, h in hparams.items():
        going.create(m, h)
    going.train_all(1)
    saved = copy.deepcopy({m: going.state(m) for m in hparams})  # as pbt/state.pt holds them
    uninterrupted = going.train_all(2)
    resumed = Host(spec, sessions)
    for m, state in saved.items():
        resumed.restore(m, state)
    again = resumed.train_all(2)
    assert going.engine == resumed.engine == "stacked"
    for m in hparams:
        assert again[m]["fitness"] == uninterrupted[m]["fitness"], m
        assert again[m]["rows"] == [{**r, "seconds": again[m]["rows"][i]["seconds"]}
                                    for i, r in enumerate(uninterrupted[m]["rows"])]


def test_the_members_of_a_process_share_one_copy_of_the_data(tmp_path):
    """Batches only read the data tensors: a worker's members (P of them on one GPU) hold one
    copy, not P, and training leaves it unchanged."""
    from lfads_core.assembly import load_data
    from lfads_core.pbt.runners import Host

    _, spec = _spec(tmp_path, {"engine": "stacked"})
    host = Host(spec, load_data(spec))
    for m in range(3):
        host.create(m, {})
    sources = [t.train_batches.data[0] for t in host.members.values()]
    assert len({s.encod.data_ptr() for s in sources}) == 1
    assert len({t.valid_batches.data[0].recon.data_ptr() for t in host.members.values()}) == 1
    before = sources[0].encod.clone()
    host.train_all(1)
    assert torch.equal(sources[0].encod, before)
    other = Host(spec, host.sessions)  # another process's members have their own
    other.create(0, {})
    assert other.members[0].train_batches.data[0].encod.data_ptr() != sources[0].encod.data_ptr()


def test_group_size_from_memory():
    assert group_size(6) == 6
    assert group_size(6, per_member=2 << 30, free=10 << 30) == 3  # 0.7 * 10 GiB / 2 GiB
    assert group_size(6, per_member=20 << 30, free=10 << 30) == 1
    assert group_size(2, per_member=1 << 20, free=10 << 30) == 2


def test_a_fractional_gpu_plans_with_its_share_of_the_memory():
    from lfads_core.train.stacked import planned_memory

    gib = 1 << 30
    assert planned_memory(60 * gib, 80 * gib, 2 * gib, 1.0) == 60 * gib  # a whole GPU: what is free
    assert planned_memory(60 * gib, 80 * gib, 2 * gib, 0.25) == 18 * gib  # a quarter, less its own
    assert planned_memory(10 * gib, 80 * gib, 2 * gib, 0.5) == 10 * gib  # never more than is free
    assert planned_memory(60 * gib, 80 * gib, 30 * gib, 0.25) == 0


def test_member_batches_with_several_sessions_is_a_spec_error(tmp_path):
    from lfads_core.errors import SpecError
    from lfads_core.pbt.members import check_search_space
    from lfads_core.pbt.runners import engine, stacked_batches

    _, spec = _spec(tmp_path, {"engine": "stacked", "stacked_batches": "member"})
    check_search_space(spec)  # one session: fine
    import attrs

    multi = attrs.evolve(spec, data=attrs.evolve(spec.data, path=str(tmp_path / "*.h5")))
    with pytest.raises(SpecError, match="pbt.stacked_batches: member needs one session"):
        check_search_space(multi)
    auto = attrs.evolve(multi, pbt=attrs.evolve(multi.pbt, stacked_batches="auto"))
    assert stacked_batches(auto) == "shared" and stacked_batches(spec) == "member"
    auto = attrs.evolve(spec, pbt=attrs.evolve(spec.pbt, engine="auto"))
    assert engine(auto, "cpu") == "trials" and engine(auto, "cuda") == "stacked"


def test_stacked_population_through_the_cli_writes_outputs_and_resumes(tmp_path):
    spec_path, spec = _spec(tmp_path, {"engine": "stacked"})
    cmd = [sys.executable, "-m", "lfads_core.cli", str(spec_path)]
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", "validate", str(spec_path)],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0 and "engine stacked (groups of" in res.stdout, res.stdout + res.stderr
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "engine stacked" in res.stdout and "warning" not in res.stdout + res.stderr
    run = Path(spec.output)
    with open(run / "pbt.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["member"]), int(r["generation"])) for r in rows] == [(m, g) for g in (1, 2) for m in range(3)]
    assert all(math.isfinite(float(r["fitness"])) for r in rows)
    with open(run / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 3  # burn-in 1 + 2 generations of 1 epoch
    assert "pbt" not in yaml.safe_load((run / "best_spec.yaml").read_text())
    assert (run / "lfads_output.h5").exists()
    res = subprocess.run(cmd + ["--set", "pbt.max_generations=3"], capture_output=True, text=True,
                         env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "resuming the population" in res.stdout and "generation 3/3" in res.stdout


def test_shared_batches_train_several_sessions_stacked(tmp_path):
    """Multisession: each step holds one session for every member; every member's readouts of
    both sessions train."""
    from lfads_core.assembly import load_data
    from lfads_core.pbt.members import build_member, train_stacked

    spec = _two_sessions(tmp_path, _spec(tmp_path, {"engine": "stacked"})[1])
    sessions = load_data(spec)
    assert len(sessions) == 2
    trainers = [build_member(spec, sessions, m, {}) for m in range(2)]
    before = [{n: p.detach().clone() for n, p in t.model.named_parameters() if n.startswith("readouts.")}
              for t in trainers]
    group = StackedTrainer(trainers, batches="shared", log=lambda s: None)
    results = train_stacked(group, 1)
    assert all("fitness" in r and math.isfinite(r["fitness"]) for r in results)
    for t, b in zip(trainers, before):
        for n, p in t.model.named_parameters():
            if n in b:
                assert not torch.equal(p, b[n]), n
    with pytest.raises(Exception, match="member needs batches of one session"):
        StackedTrainer(trainers, batches="member", log=lambda s: None).run_epoch([True, True])


SMALL_MODEL = ["model.encoder.ic_enc_dim=8", "model.encoder.ci_enc_dim=8", "model.encoder.ic_dim=4",
               "model.generator.gen_dim=12", "model.generator.con_dim=6", "model.generator.co_dim=2",
               "model.generator.fac_dim=4", "data.batch_size=16", "pbt={}"]


def _package_data(name: str, tmp_path: Path) -> str:
    from lfads_core.data.synth import make_lorenz_sessions, write_h5

    if name == "calcium":
        from lfads_calcium.synth import make_calcium

        write_h5(make_calcium(seed=0, frame_bins=3, n_conditions=6, trials_per_condition=10, n_neurons=8)[""],
                 tmp_path / "calcium.h5")
        return str(tmp_path / "calcium.h5")
    if name == "emg":
        from lfads_emg.synth import make_emg

        write_h5(make_emg(seed=0, n_conditions=6, trials_per_condition=10, n_bins=40), tmp_path / "emg.h5")
        return str(tmp_path / "emg.h5")
    for i, s in enumerate(make_lorenz_sessions(seed=0, n_sessions=2, n_conditions=6, trials_per_condition=6,
                                               n_bins=20, neurons=(8, 6))):
        write_h5(s, tmp_path / f"session{i}.h5")
    return str(tmp_path / "session*.h5")


@pytest.mark.parametrize("name,package", [("calcium", "lfads_calcium"), ("emg", "lfads_emg"),
                                          ("multisession", "lfads_multisession")])
def test_the_modality_packages_components_run_stacked_as_the_single_model(tmp_path, name, package):
    """The example spec of each modality package (zig + SBTT, gamma, PCR readin/readout): a stacked
    member's loss and gradients equal the single model's."""
    pytest.importorskip(package)
    from lfads_core.assembly import load_data
    from lfads_core.pbt.members import build_member
    from lfads_core.pbt.runners import stacked_batches
    from lfads_core.spec.load import load_spec

    repo = Path(__file__).resolve().parents[1]
    spec = load_spec(repo / "examples" / f"{name}.yaml",
                     [f"data.path={_package_data(name, tmp_path)}", *SMALL_MODEL], out=str(tmp_path / "run"))
    sessions = load_data(spec)
    trainers = [build_member(spec, sessions, m, {"model.dropout_rate": 0.0}) for m in range(2)]
    group = StackedTrainer(trainers, stacked_batches(spec), log=lambda s: None)
    group.check()
    group.sample = False
    batch = next(iter(trainers[0].train_batches(torch.Generator().manual_seed(1))))
    own = [t.augment(batch, True) for t in trainers]
    group.base.train(True)
    terms = group._forward(stack_batches(own))
    terms["loss"].sum().backward()
    for i, t in enumerate(trainers):
        t.model.train(True)
        out = t.model(own[i].encod, session=own[i].session, ext=own[i].ext, sample=False)
        loss = t._total(t.model.losses(out, own[i]))
        loss.backward()
        assert float(terms["loss"][i].detach()) == pytest.approx(float(loss.detach()), rel=1e-5)
        for n, p in t.model.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(group.params[n].grad[i], p.grad, rtol=1e-4, atol=1e-6, msg=n)
