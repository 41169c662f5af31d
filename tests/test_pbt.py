"""AutoLFADS without Ray: the pure logic (hypothesis), the spec section, exploit through
Trainer.adopt, and a whole population in this process (pbt.address: local), resumed."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lfads_core.errors import SpecError
from lfads_core.pbt.explore import perturb, sample_initial, should_stop, tournament
from lfads_core.spec.schema import DimensionSpec, default_search_space

REPO = Path(__file__).resolve().parents[1]
SPACE = default_search_space()


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), path=st.sampled_from(sorted(SPACE)), steps=st.integers(1, 30))
def test_explore_never_leaves_the_bounds(seed, path, steps):
    rng = np.random.default_rng(seed)
    d = SPACE[path]
    value = sample_initial({path: d}, rng)[path]
    assert d.low <= value <= d.high
    for _ in range(steps):
        new = perturb(value, d, rng)
        assert d.low <= new <= d.high
        if value > 0 and new not in (d.low, d.high):  # a step of at most ± w, at least 0.002 w
            assert 0.002 * d.explore_weight * 0.999 <= abs(new / value - 1) <= d.explore_weight * 1.001
        value = new


def test_explore_resamples_at_a_bound_and_log_sampling_covers_the_decades():
    rng = np.random.default_rng(0)
    d = DimensionSpec(1e-5, 5e-3, "log", 0.3)
    assert all(perturb(5e-3, d, rng) <= 5e-3 for _ in range(200))  # at the top: only down moves
    draws = [sample_initial({"x": d}, rng)["x"] for _ in range(2000)]
    decades = np.histogram(np.log10(draws), bins=[-5, -4, -3, np.log10(5e-3)])[0]
    assert decades.min() > 400  # log-uniform: every decade drawn alike (not all near the top)


@settings(max_examples=200, deadline=None)
@given(fit=st.lists(st.one_of(st.floats(0.1, 10.0), st.just(float("nan")), st.just(float("inf"))),
                    min_size=2, max_size=25), seed=st.integers(0, 10_000))
def test_tournament_pairs_every_member_once_and_the_better_one_wins(fit, seed):
    fitness = dict(enumerate(fit))
    pairs = tournament(fitness, np.random.default_rng(seed))
    seen = [m for pair in pairs for m in pair]
    assert len(seen) == len(set(seen)) and len(pairs) == len(fit) // 2
    for w, loser in pairs:
        fw = fitness[w] if math.isfinite(fitness[w]) else math.inf
        fl = fitness[loser] if math.isfinite(fitness[loser]) else math.inf
        assert fw <= fl


def test_tournament_pairing_is_random():
    fitness = {m: float(m) for m in range(8)}
    pairings = {tuple(sorted(tuple(sorted(p)) for p in tournament(fitness, np.random.default_rng(s))))
                for s in range(50)}
    assert len(pairings) > 20


def test_stopping_rule():
    assert not should_stop([1.0, 0.9, 0.8], 5e-4, 4)
    assert should_stop([1.0, 0.99999, 0.99998, 0.99997, 0.99996], 5e-4, 4)
    assert not should_stop([1.0, 0.9, 0.8, 0.7, 0.6], 5e-4, 4)
    assert not should_stop([math.inf] * 6, 5e-4, 4)


def _spec(tmp_path, pbt: dict, name: str = "run", **extra):
    """A tiny population spec (tiny Lorenz data, tiny model) written to ``tmp_path/<name>.yaml``
    with output ``tmp_path/<name>``; ``pbt`` overrides the pbt section. Returns (path, spec)."""
    from lfads_core.data.synth import make_lorenz, write_h5
    from lfads_core.spec.load import load_spec

    data = tmp_path / "tiny.h5"
    if not data.exists():
        write_h5(make_lorenz(seed=0, n_conditions=6, trials_per_condition=6, n_bins=20, n_neurons=8), data)
    raw = {"data": {"path": str(data), "batch_size": 12},
           "model": {"encoder": {"name": "bigru", "ic_enc_dim": 6, "ci_enc_dim": 6, "ic_dim": 4, "ci_lag": 1},
                     "generator": {"name": "gru", "gen_dim": 8, "con_dim": 4, "co_dim": 1, "fac_dim": 3},
                     "reconstruction": {"name": "poisson"},
                     "augmentations": [{"name": "coordinated_dropout", "rate": 0.3}]},
           "train": {"max_epochs": 100, "kl": {"ramp_epochs": 1}, "l2": {"ramp_epochs": 1}},
           "sampling": {"num_samples": 2, "plots": False},
           "pbt": {"population": 3, "generation_epochs": 1, "burn_in_epochs": 1, "max_generations": 2,
                   "address": "local", **pbt},
           "output": str(tmp_path / name), **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, load_spec(path)


def test_search_space_paths_are_checked(tmp_path):
    from lfads_core.pbt.members import check_search_space

    _, spec = _spec(tmp_path, {"search_space": {
        "train.lrr": {"low": 1e-4, "high": 1e-2, "sample": "log"},
        "model.augmentations.0.rate": {"low": 0.1, "high": 0.5},
        "model.augmentations.3.rate": {"low": 0.1, "high": 0.5}}})
    with pytest.raises(SpecError) as err:
        check_search_space(spec)
    lines = sorted(str(err.value).splitlines())
    assert len(lines) == 2
    assert lines[0].startswith("spec: pbt.search_space.model.augmentations.3.rate: not a hyperparameter")
    assert lines[1].startswith("spec: pbt.search_space.train.lrr: not a hyperparameter")
    assert "model.augmentations.0.rate)" in lines[1]  # the known ones are listed


def test_negative_pbt_seed_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match=r"pbt.seed: .*>= 0"):
        _spec(tmp_path, {"seed": -1})


def test_adopt_takes_weights_and_optimizer_keeps_own_streams(tmp_path):
    from lfads_core.assembly import load_data
    from lfads_core.pbt.members import build_member

    _, spec = _spec(tmp_path, {})
    sessions = load_data(spec)
    hp = {"train.lr": 0.002, "model.dropout_rate": 0.1}
    a = build_member(spec, sessions, 0, hp)
    b = build_member(spec, sessions, 1, hp)
    assert not torch.equal(next(a.model.parameters()), next(b.model.parameters()))  # own init
    for _ in range(2):
        a.run_epoch()
        b.run_epoch()
    b.nan_recoveries, b.since_best = 2, 7
    data_state = b.data_rng.get_state()
    new = {"train.lr": 0.0007, "model.dropout_rate": 0.25, "model.augmentations.0.rate": 0.5}
    b.adopt(a.state_dict(), new)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert b.optimizer.param_groups[0]["lr"] == pytest.approx(0.0007)  # the new lr took effect
    assert b.model.dropout_rate == pytest.approx(0.25) and b.augmentations[0].rate == pytest.approx(0.5)
    assert torch.equal(b.data_rng.get_state(), data_state)  # its own data order, not a's
    assert not torch.equal(b.data_rng.get_state(), a.data_rng.get_state())
    assert b.nan_recoveries == 0 and b.since_best == 0 and b.smoothed == a.smoothed


@settings(max_examples=50, deadline=None)
@given(failed=st.sets(st.integers(0, 5), max_size=5), seed=st.integers(0, 2**16))
def test_failed_members_sit_out_the_tournament_and_clone_the_best(failed, seed):
    from lfads_core.pbt.controller import Population, run_generations
    from lfads_core.spec.schema import PbtSpec

    class Runner:
        def __init__(self):
            self.adopted = []

        def train(self, epochs):
            return {m: {"error": "died", "rows": []} if m in failed else {"fitness": 1.0 + m, "rows": []}
                    for m in range(6)}

        def state(self, m):
            return m

        def adopt(self, loser, state, hparams):
            self.adopted.append((state, loser))

    pbt = PbtSpec(population=6, max_generations=2, seed=seed)
    runner = Runner()
    run_generations(pbt, runner, Population(hparams={m: sample_initial(pbt.search_space, np.random.default_rng(m))
                                                      for m in range(6)}), log=lambda s: None)
    winners = {w for w, _ in runner.adopted}
    assert not winners & failed  # a failed member never hands on its state
    assert {loser for w, loser in runner.adopted if loser in failed} == failed
    best = min(set(range(6)) - failed)
    assert all(w == best for w, loser in runner.adopted if loser in failed)


def test_a_member_behind_takes_the_epoch_count_and_history_it_adopts(tmp_path):
    """A member rebuilt after its worker died (epoch 0) goes on from its winner's epoch, so its
    KL/L2 ramps and max_epochs in best_spec.yaml are not restarted; members level with each
    other keep their own history."""
    from lfads_core.assembly import load_data
    from lfads_core.pbt.members import build_member

    _, spec = _spec(tmp_path, {})
    sessions = load_data(spec)
    hp = {"train.lr": 0.002}
    a, b, fresh = (build_member(spec, sessions, m, hp) for m in range(3))
    for _ in range(3):
        a.run_epoch()
        b.run_epoch()
    own = list(b.history)
    b.adopt(a.state_dict(), hp)
    assert b.epoch == 3 and b.history == own
    fresh.adopt(a.state_dict(), hp)
    assert fresh.epoch == 3 and fresh.history == a.history
    row = fresh.run_epoch()
    assert row["epoch"] == 4 and row["kl_ramp"] == a.run_epoch()["kl_ramp"] > 0


def test_local_population_writes_outputs_and_resumes(tmp_path):
    spec_path, spec = _spec(tmp_path, {})
    cmd = [sys.executable, "-m", "lfads_core.cli", str(spec_path)]
    env = {"OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    run = Path(spec.output)
    for name in ("pbt.csv", "best_spec.yaml", "metrics.csv", "lfads_output.h5", "summary.json",
                 "checkpoints/best.pt", "pbt/state.pt"):
        assert (run / name).exists(), name
    with open(run / "pbt.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["member"]), int(r["generation"])) for r in rows] == [(m, g) for g in (1, 2) for m in range(3)]
    assert list(rows[0])[:3] == ["member", "generation", "fitness"] and "train.lr" in rows[0]
    assert res.stdout.count("generation ") >= 2 and "exploits" in res.stdout
    best = yaml.safe_load((run / "best_spec.yaml").read_text())
    assert "pbt" not in best
    member = torch.load(run / "checkpoints" / "best.pt", weights_only=False)["member"]
    assert best["train"]["seed"] == spec.train.seed + 1_000_003 * (member + 1)  # the seed it trained with
    assert best["output"] == str(run / "best_member")  # lfads-run best_spec.yaml leaves the population's run alone
    assert best["train"]["max_epochs"] == 1 + 2 * 1  # burn-in + 2 generations of 1 epoch: as long as it trained
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", "validate", str(run / "best_spec.yaml")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    # More generations: the population resumes after generation 2.
    res = subprocess.run(cmd + ["--set", "pbt.max_generations=3"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "resuming the population" in res.stdout and "generation 3/3" in res.stdout
    assert "generation 1/3" not in res.stdout
    # Once more: the population is complete; the outputs come from its saved states, no runner.
    before = (run / "pbt.csv").read_text()
    res = subprocess.run(cmd + ["--set", "pbt.max_generations=3"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "finished after generation 3" in res.stdout and "generation 3/3" not in res.stdout
    assert (run / "pbt.csv").read_text() == before and (run / "lfads_output.h5").exists()


def test_validate_checks_the_search_space_and_describes_the_population(tmp_path):
    spec_path, _ = _spec(tmp_path, {})
    env = {"OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", "validate", str(spec_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "AutoLFADS: population 3" in res.stdout and "train.lr" in res.stdout
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", "validate", str(spec_path),
                          "--set", "pbt.search_space={train.lrr: {low: 0.001, high: 0.01}}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "pbt.search_space.train.lrr: not a hyperparameter" in res.stderr
    assert "Traceback" not in res.stderr and "spec ok" not in res.stdout
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", str(spec_path),
                          "--set", "pbt.search_space={train.lrr: {low: 0.001, high: 0.01}}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and res.stderr.startswith(f"error: {spec_path}: pbt.search_space.train.lrr"), res.stderr
    res = subprocess.run([sys.executable, "-m", "lfads_core.cli", "validate", str(spec_path), "--set",
                          "pbt.search_space={model.dropout_rate: {low: 0.5, high: 1.5}}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().endswith("pbt.search_space.model.dropout_rate.high: outside what "
                                       "model.dropout_rate accepts (must be in [0, 1), got 1.5)"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_resources_beyond_this_machine_are_a_spec_error_before_anything_is_written(tmp_path):
    """With an embedded cluster (this machine) validate and the run say so at once; the run used
    to fail after writing its folder, naming no file."""
    spec_path, spec = _spec(tmp_path, {"address": None})
    env = {"OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"}
    for cmd in (["validate", str(spec_path)], [str(spec_path)]):
        res = subprocess.run([sys.executable, "-m", "lfads_core.cli", *cmd, "--set", "pbt.resources.cpu=4096",
                              "--set", "pbt.resources.gpu=64"], capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        lines = res.stderr.strip().splitlines()
        assert lines[0].startswith(f"error: {spec_path}: pbt.resources.cpu: one member asks for 4096 CPU, "
                                   f"this machine (the embedded Ray cluster) has "), lines
        assert lines[1].startswith(f"error: {spec_path}: pbt.resources.gpu: one member asks for 64 GPU"), lines
        assert not Path(spec.output).exists()


def test_explore_weight_and_search_space_messages(tmp_path):
    from lfads_core.spec.load import load_spec

    spec_path, _ = _spec(tmp_path, {})
    with pytest.raises(SpecError, match=r"explore_weight: must be in \(0, 1\], got 1.5"):
        load_spec(spec_path, ["pbt.search_space.train.lr.explore_weight=1.5"])
    with pytest.raises(SpecError, match=r"explore_weight: must be in \(0, 1\], got 0"):
        load_spec(spec_path, ["pbt.search_space.train.lr.explore_weight=0"])
    with pytest.raises(SpecError, match=r"pbt.search_space: expected a mapping \(key: value lines\), got a list$"):
        load_spec(spec_path, ["pbt.search_space=[train.lr]"])


@pytest.mark.parametrize("rule", ["max_generations", "stop_ratio"])
def test_the_last_generation_line_says_why_the_population_stops(rule):
    from lfads_core.pbt.controller import Population, run_generations
    from lfads_core.spec.schema import PbtSpec

    class Runner:
        def train(self, epochs):
            return {m: {"fitness": 1.0 + m, "rows": []} for m in range(2)}  # never improves

        def state(self, m):
            return m

        def adopt(self, loser, state, hparams):
            pass

    pbt = (PbtSpec(population=2, max_generations=3) if rule == "max_generations"
           else PbtSpec(population=2, max_generations=50, stop_ratio=0.01, stop_generations=2))
    lines = []
    run_generations(pbt, Runner(), Population(hparams={m: sample_initial(pbt.search_space, np.random.default_rng(m))
                                                       for m in range(2)}), log=lines.append)
    if rule == "max_generations":
        assert lines[-1].endswith("(stopping: reached max_generations (3))") and len(lines) == 3
    else:
        assert len(lines) == 3 and lines[-1].endswith(
            "(stopping: the best fitness improved by less than 0.01 (relative) over the last 2 "
            "generations (pbt.stop_ratio, pbt.stop_generations))")
