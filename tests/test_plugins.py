"""Third-party plugins: discovery through entry points, a real external prior (``laplace`` from
tests/fixtures/lfads_example, which also has a reconstruction, an augmentation, a subcommand and a
synthetic dataset), a plugin that fails to import (``broken`` from
tests/fixtures/lfads_broken_plugin), name suggestions and conflicts in the registry.

The fixtures are pip-installed once per session into a temporary target folder that is put on
PYTHONPATH for subprocesses (and on sys.path for the in-process tests).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import h5py
import numpy as np
import pytest
import torch

from lfads_core import registry
from lfads_core.errors import PluginError, SpecError
from lfads_core.spec.load import spec_from_dict

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PYTHON = REPO / ".venv" / "bin" / "python"
SCRIPT = REPO / ".venv" / "bin" / "lfads-run"
LFADS_RUN = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "lfads_core.cli"]
PLUGINS = {"lfads_example": ("lfads-example", "laplace", "lfads_example.laplace:LaplacePrior"),
           "lfads_broken_plugin": ("lfads-broken-plugin", "broken", "lfads_broken_plugin:BrokenPrior")}
EXAMPLE_ENTRY_POINTS = """[lfads.prior]
laplace = lfads_example.laplace:LaplacePrior
[lfads.reconstruction]
bernoulli = lfads_example.bernoulli:Bernoulli
[lfads.augmentation]
time_mask = lfads_example.time_mask:TimeMask
[lfads]
example = lfads_example.commands
"""

TINY = ["model.encoder.ic_enc_dim=8", "model.encoder.ci_enc_dim=4", "model.encoder.ic_dim=4",
        "model.generator.gen_dim=8", "model.generator.con_dim=4", "model.generator.co_dim=2",
        "model.generator.fac_dim=4", "data.batch_size=16", "train.max_epochs=2",
        "train.kl.ramp_epochs=0", "train.l2.ramp_epochs=0", "sampling.num_samples=3",
        "sampling.plots=false"]


def _hand_made_dist(target: Path, package: str) -> None:
    """Fallback when pip cannot build: copy the package and write its dist-info by hand."""
    dist, name, value = PLUGINS[package]
    shutil.copytree(FIXTURES / package / "src" / package, target / package)
    info = target / f"{package}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    entry_points = EXAMPLE_ENTRY_POINTS if package == "lfads_example" else f"[lfads.prior]\n{name} = {value}\n"
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture(scope="session")
def plugin_target(tmp_path_factory) -> Path:
    """A folder with both fixture plugins installed (pip --target), for PYTHONPATH/sys.path."""
    root = tmp_path_factory.mktemp("plugins")
    target = root / "site"
    # Build from copies: an in-tree build would leave build/ and *.egg-info in tests/fixtures.
    sources = []
    for package in PLUGINS:
        src = root / "src" / package
        shutil.copytree(FIXTURES / package, src,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        sources.append(str(src))
    python = str(PYTHON if PYTHON.exists() else sys.executable)
    res = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                          "--no-build-isolation", "--disable-pip-version-check",
                          "--target", str(target), *sources],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if res.returncode != 0:  # e.g. setuptools missing in the venv
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for package in PLUGINS:
            _hand_made_dist(target, package)
    for package, (dist, _, _) in PLUGINS.items():
        assert (target / package / "__init__.py").is_file()
        assert list(target.glob(f"{package}-*.dist-info/entry_points.txt")), package
    return target


@pytest.fixture(scope="session")
def env(plugin_target) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(plugin_target), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "LFADS_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    """A spec selecting the normal ic prior explicitly, and a tiny Poisson data file."""
    root = tmp_path_factory.mktemp("plugin_runs")
    rng = np.random.default_rng(1)
    with h5py.File(root / "small.h5", "w") as f:
        for split, n in (("train", 32), ("valid", 16)):
            rates = np.exp(rng.normal(0.3, 0.4, size=(n, 20, 8))).astype(np.float32)
            spikes = rng.poisson(rates).astype(np.float32)
            f[f"{split}_encod_data"] = spikes
            f[f"{split}_recon_data"] = spikes
            f[f"{split}_truth"] = rates
    (root / "spec.yaml").write_text(
        "data: {path: small.h5}\n"
        "model:\n"
        "  encoder: {name: bigru}\n"
        "  generator: {name: gru}\n"
        "  reconstruction: {name: poisson}\n"
        "  ic_prior: {name: normal}\n"
        "output: runs/default\n")
    return root


def run_cli(env, *args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*LFADS_RUN, *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture
def installed(plugin_target, monkeypatch):
    """In-process: the fixture plugins on sys.path, the registry's cache fresh before and after."""
    monkeypatch.syspath_prepend(str(plugin_target))
    importlib.invalidate_caches()
    registry.clear_cache()
    yield plugin_target
    monkeypatch.undo()
    for name in list(sys.modules):
        if name.split(".")[0] in PLUGINS:
            del sys.modules[name]
    importlib.invalidate_caches()
    registry.clear_cache()


# --------------------------------------------------------------------------------------- #
# Subprocesses
# --------------------------------------------------------------------------------------- #
def test_plugins_json_lists_third_party_and_broken(env):
    res = run_cli(env, "plugins", "--json")
    assert res.returncode == 0, res.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(res.stdout)}
    laplace = rows[("prior", "laplace")]
    assert laplace["distribution"] == "lfads-example"
    assert laplace["version"] == "0.1.0" and laplace["status"] == "ok"
    broken = rows[("prior", "broken")]
    assert broken["distribution"] == "lfads-broken-plugin"
    assert broken["status"].startswith("error")
    assert "lfads-broken-plugin" in broken["status"] and "ImportError" in broken["status"]
    # the rest is unaffected
    assert rows[("reconstruction", "poisson")]["status"] == "ok"
    assert rows[("prior", "normal")]["status"] == "ok"


def test_plugins_text_lists_broken_with_its_error(env):
    res = run_cli(env, "plugins")
    assert res.returncode == 0, res.stderr
    [line] = [l for l in res.stdout.splitlines() if " broken " in l]
    assert "lfads-broken-plugin" in line and "error" in line
    assert "Traceback" not in res.stdout + res.stderr


def test_training_with_the_laplace_prior(env, work):
    run_dir = work / "runs" / "laplace"
    res = run_cli(env, work / "spec.yaml", *sets(*TINY, "model.ic_prior.name=laplace",
                                                   "model.ic_prior.scale=0.5"),
                  "--out", run_dir, cwd=work)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (run_dir / "lfads_output.h5").is_file()
    saved = (run_dir / "spec.yaml").read_text()
    assert "laplace" in saved and "scale: 0.5" in saved
    best = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    log_scale = best["model"]["ic_prior.log_scale"]
    assert log_scale.shape == (4,) and torch.allclose(log_scale, torch.full((4,), math.log(0.5)))


def test_selecting_the_broken_plugin_is_a_one_line_error(env, work):
    res = run_cli(env, work / "spec.yaml", *sets(*TINY, "model.ic_prior.name=broken"),
                  "--out", work / "runs" / "broken", cwd=work)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    [line] = res.stderr.splitlines()
    assert line.startswith("error: ")
    for needle in ("model.ic_prior", "'broken'", "lfads-broken-plugin", "0.1.0", "ImportError"):
        assert needle in line, line
    assert not (work / "runs" / "broken").exists()


def test_bad_config_of_the_third_party_prior(env, work):
    res = run_cli(env, "validate", work / "spec.yaml",
                  *sets(*TINY, "model.ic_prior.name=laplace", "model.ic_prior.scale=-1"), cwd=work)
    assert res.returncode == 2
    [line] = res.stderr.splitlines()
    assert "model.ic_prior.scale" in line and "must be > 0" in line


def test_runs_not_using_broken_are_unaffected(env, work):
    res = run_cli(env, "validate", work / "spec.yaml", *sets(*TINY), cwd=work)
    assert res.returncode == 0, res.stderr
    assert "spec ok" in res.stdout and res.stderr == ""


# --------------------------------------------------------------------------------------- #
# In-process: registry
# --------------------------------------------------------------------------------------- #
@pytest.mark.parametrize("kind, bad, good", [("prior", "norml", "normal"),
                                             ("prior", "ar-normal", "ar_normal"),
                                             ("reconstruction", "poison", "poisson"),
                                             ("generator", "gur", "gru"),
                                             ("augmentation", "coordinated_dropot", "coordinated_dropout")])
def test_lookup_unknown_name_suggests_closest(kind, bad, good):
    with pytest.raises(PluginError) as info:
        registry.lookup(kind, bad)
    msg = str(info.value)
    assert f"did you mean '{good}'" in msg and f"'{bad}'" in msg
    for name in registry.names(kind):
        assert name in msg
    assert "\n" not in msg


def test_lookup_unknown_kind():
    with pytest.raises(PluginError) as info:
        registry.entries("priors")
    assert "prior" in str(info.value)


def test_registry_finds_installed_plugins(installed):
    assert {"laplace", "broken", "normal"} <= set(registry.names("prior"))
    entry = registry.lookup("prior", "laplace")
    assert (entry.dist, entry.version) == ("lfads-example", "0.1.0")
    cls = registry.load("prior", "laplace")
    assert cls.__name__ == "LaplacePrior" and attrs.has(cls.Config)
    with pytest.raises(PluginError) as info:
        registry.load("prior", "broken")
    msg = str(info.value)
    assert "broken" in msg and "lfads-broken-plugin 0.1.0" in msg and "ImportError" in msg
    rows = {(r["kind"], r["name"]): r for r in registry.listing()}
    assert rows[("prior", "laplace")]["status"] == "ok"
    assert rows[("prior", "broken")]["status"].startswith("error")


def test_listing_without_imports_reports_no_errors(installed):
    rows = {(r["kind"], r["name"]): r for r in registry.listing(check_imports=False)}
    assert rows[("prior", "broken")]["status"] == "ok"
    assert "lfads_broken_plugin" not in sys.modules


def test_spec_selecting_the_laplace_prior(installed):
    raw = {"data": {"path": "x.h5"},
           "model": {"reconstruction": "poisson", "ic_prior": {"name": "laplace", "scale": 2}}}
    spec = spec_from_dict(raw)
    assert spec.model.ic_prior.name == "laplace"
    assert spec.model.ic_prior.config.scale == 2.0
    raw["model"]["ic_prior"] = {"name": "laplace", "scal": 2.0}
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    assert "model.ic_prior.scal" in str(info.value) and "did you mean 'scale'" in str(info.value)
    raw["model"]["ic_prior"] = {"name": "broken"}
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    assert "lfads-broken-plugin" in str(info.value)


def test_two_distributions_registering_one_name_is_an_error(tmp_path, monkeypatch):
    info = tmp_path / "lfads_impostor-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lfads-impostor\nVersion: 9.9\n")
    (info / "entry_points.txt").write_text("[lfads.prior]\nnormal = lfads_impostor:Normal\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.clear_cache()
    try:
        with pytest.raises(PluginError) as exc:
            registry.lookup("prior", "normal")
        msg = str(exc.value)
        assert "lfads-core" in msg and "lfads-impostor 9.9" in msg
        rows = [r for r in registry.listing(check_imports=False) if r["name"] == "normal"]
        assert len(rows) == 2 and all(r["status"].startswith("conflict") for r in rows)
    finally:
        monkeypatch.undo()
        registry.clear_cache()


# --------------------------------------------------------------------------------------- #
# In-process: the Laplace prior's KL
# --------------------------------------------------------------------------------------- #
@pytest.fixture
def laplace_module(installed):
    return importlib.import_module("lfads_example.laplace")


def test_laplace_kl_matches_monte_carlo(laplace_module):
    torch.manual_seed(0)
    prior = laplace_module.LaplacePrior(laplace_module.LaplaceConfig(scale=0.7), shape=(3,)).double()
    mean = torch.tensor([[0.0, 0.5, -1.2], [2.0, -0.1, 0.3]], dtype=torch.float64)
    std = torch.tensor([[1.0, 0.3, 0.8], [0.5, 1.5, 0.05]], dtype=torch.float64)
    kl = prior.kl(mean, std)
    assert kl.shape == (2,)

    n = 400_000
    u = mean + std * torch.randn(n, *mean.shape, dtype=torch.float64)
    q = torch.distributions.Normal(mean, std)
    p = torch.distributions.Laplace(torch.zeros(()), torch.tensor(0.7, dtype=torch.float64))
    samples = (q.log_prob(u) - p.log_prob(u)).sum(-1)  # [n, B]
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(n)
    assert torch.all((kl - mc).abs() < 5 * se + 1e-3), (kl, mc, se)


def test_laplace_kl_properties(laplace_module):
    prior = laplace_module.LaplacePrior(laplace_module.LaplaceConfig(scale=0.3, learnable=True),
                                        shape=(5,))
    torch.manual_seed(1)
    mean, std = torch.randn(7, 11, 5), torch.rand(7, 11, 5) + 0.05  # [B, T, U] also works
    kl = prior.kl(mean, std)
    assert kl.shape == (7,) and torch.all(kl >= 0) and torch.all(torch.isfinite(kl))
    kl.sum().backward()
    assert prior.log_scale.grad is not None and torch.all(torch.isfinite(prior.log_scale.grad))
    # E|u| is the folded-normal mean; at mean 0 it is std * sqrt(2/pi)
    e_abs = laplace_module.expected_abs(torch.zeros(3), torch.ones(3) * 2.0)
    assert torch.allclose(e_abs, torch.full((3,), 2.0 * math.sqrt(2 / math.pi)))
    # far from 0, E|u| -> |mean|
    assert torch.allclose(laplace_module.expected_abs(torch.tensor([-50.0, 50.0]), torch.ones(2)),
                          torch.tensor([50.0, 50.0]))


def test_laplace_config_validates(laplace_module):
    with pytest.raises(ValueError):
        laplace_module.LaplaceConfig(scale=0.0)
    assert laplace_module.LaplacePrior.Config is laplace_module.LaplaceConfig
    assert attrs.fields(laplace_module.LaplaceConfig).scale.default > 0


# --------------------------------------------------------------------------------------- #
# The example package's reconstruction, augmentation, subcommand and synthetic dataset
# --------------------------------------------------------------------------------------- #
@pytest.fixture(scope="session")
def bernoulli_run(env, work):
    data = work / "bernoulli.h5"
    synth = run_cli(env, "synth", "bernoulli", "--out", data, "--seed", "3")
    assert synth.returncode == 0, synth.stderr
    run_dir = work / "runs" / "bernoulli"
    res = run_cli(env, work / "spec.yaml",
                  *sets(*TINY, f"data.path={data}", "model.reconstruction={name: bernoulli}",
                        "model.augmentations=[{name: time_mask, width: 4, prob: 0.5}]"),
                  "--out", run_dir, cwd=work)
    return data, run_dir, res


def test_help_lists_the_plugin_subcommand_and_synth_dataset(env):
    res = run_cli(env, "--help")
    assert res.returncode == 0
    assert "example-stats" in res.stdout and "(lfads-example 0.1.0)" in res.stdout
    res = run_cli(env, "synth", "--help")
    assert "bernoulli" in res.stdout and "lorenz" in res.stdout


def test_plugin_subcommand_end_to_end(env, bernoulli_run):
    data, _, _ = bernoulli_run
    res = run_cli(env, "example-stats", data, "--split", "valid")
    assert res.returncode == 0, res.stderr
    assert "valid_recon_data: 20 trials x 40 bins x 12 channels" in res.stdout
    res = run_cli(env, "example-stats", data.with_name("missing.h5"))
    assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1


def test_training_with_bernoulli_and_time_mask(bernoulli_run):
    data, run_dir, res = bernoulli_run
    assert res.returncode == 0, res.stdout + res.stderr
    with open(run_dir / "metrics.csv") as f:
        header = f.readline().strip().split(",")
    for column in ("train_penalty", "train_nll_bits", "valid_nll_bits"):
        assert column in header
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["units"] == "probability per bin"
    assert 0 < summary["valid_nll_bits"] < 1.0 and "valid_rate_r2" in summary
    assert not any(k.endswith("bits_per_spike") for k in summary)
    with h5py.File(run_dir / "lfads_output.h5") as f:
        assert f.attrs["output_params_units"] == "probability per bin"
        assert f["valid_output_params"].attrs["units"] == "probability per bin"
        probs = f["valid_output_params"][()]
    assert probs.shape == (20, 40, 12) and probs.min() > 0 and probs.max() < 1
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert state["trainer"]["hparams"]["model.augmentations.0.prob"] == 0.5
    assert len(state["trainer"]["aug_rngs"]) == 1


def test_time_mask_wider_than_the_trials_is_an_error(env, work, bernoulli_run):
    data, _, _ = bernoulli_run
    res = run_cli(env, "validate", work / "spec.yaml",
                  *sets(*TINY, f"data.path={data}", "model.reconstruction={name: bernoulli}",
                        "model.augmentations=[{name: time_mask, width: 41}]"), cwd=work)
    assert res.returncode == 2
    [line] = res.stderr.splitlines()
    assert "model.augmentations.0 (time_mask): width: 41 bins is more than the trials' 40" in line


def test_bernoulli_rejects_counts_naming_channels(env, work):
    res = run_cli(env, "validate", work / "spec.yaml",
                  *sets(*TINY, "model.reconstruction={name: bernoulli}"), cwd=work)
    assert res.returncode == 2
    [line] = res.stderr.splitlines()
    assert "train_recon_data has values other than 0 and 1 in" in line and "(model.reconstruction: bernoulli)" in line


def test_example_components_conform(installed):
    from lfads_core.conformance import component_problems

    for kind, name in (("prior", "laplace"), ("reconstruction", "bernoulli"), ("augmentation", "time_mask")):
        assert component_problems(kind, registry.load(kind, name)) == [], name
