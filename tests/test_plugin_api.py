"""The plugin API's checks: every built-in component conforms; each way a third-party component can
break its contract is a one-line error naming its distribution (at load, at ``lfads-run
validate`` through one tiny forward pass, and from ``lfads-run plugins --check``); augmentations
draw from a generator saved with the training state; hook-provided subcommands.

Misbehaving components live in a fake installed distribution (``lfads-bad 0.1``) written into a
temporary folder on ``sys.path``; the CLI runs in-process (``cli.main``).
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lfads_core import cli, hooks, registry
from lfads_core.components import AugmentContext, Augmentation
from lfads_core.conformance import assert_conforms, component_problems
from lfads_core.data.batches import to_tensors
from lfads_core.data.h5 import Split
from lfads_core.data.stats import DataStats
from lfads_core.model.build import build_augmentations, build_model
from lfads_core.model.lfads import SessionShape
from lfads_core.spec.load import spec_from_dict
from lfads_core.train.loop import Trainer

TINY = {"encoder": {"name": "bigru", "ic_enc_dim": 8, "ci_enc_dim": 4, "ic_dim": 4},
        "generator": {"name": "gru", "gen_dim": 8, "con_dim": 4, "co_dim": 2, "fac_dim": 4},
        "reconstruction": {"name": "poisson"}}


# --------------------------------------------------------------------------------------- #
# Every built-in component conforms
# --------------------------------------------------------------------------------------- #
BUILTINS = [(kind, name) for kind in registry.KINDS for name, entries in registry.entries(kind).items()
            if entries[0].dist in ("lfads-core", "lfads-spikes")]


def test_builtins_are_all_listed():
    assert {("prior", "normal"), ("prior", "ar_normal"), ("reconstruction", "poisson"),
            ("reconstruction", "gaussian"), ("augmentation", "coordinated_dropout"),
            ("encoder", "bigru"), ("generator", "gru"), ("readin", "identity"),
            ("readout", "linear")} <= set(BUILTINS)


@pytest.mark.parametrize("kind, name", BUILTINS)
def test_builtin_component_conforms(kind, name):
    assert_conforms(kind, registry.load(kind, name))


def test_conformance_with_a_non_default_config():
    from lfads_core.model.generator import GRUGenerator

    autonomous = GRUGenerator.Config(gen_dim=6, con_dim=0, co_dim=0, fac_dim=3)
    assert component_problems("generator", GRUGenerator, autonomous) == []


# --------------------------------------------------------------------------------------- #
# Misbehaving components of a fake distribution
# --------------------------------------------------------------------------------------- #
BAD_MODULE = '''
import attrs, torch
from torch import nn
from lfads_core import Prior, Reconstruction, Augmentation
from lfads_core.model.priors import NormalPrior
from lfads_spikes.poisson import Poisson


@attrs.frozen
class Empty:
    pass


class NoConfig(Prior):
    def kl(self, mean, std):
        return mean.sum(-1)


class NoKL(Prior):
    Config = Empty

    def __init__(self, config, shape):
        super().__init__()


class NotAPrior(nn.Module):
    Config = Empty

    def kl(self, mean, std):
        return mean.sum(-1)


class PerDimKL(NormalPrior):
    def kl(self, mean, std):  # forgets to sum over dimensions: [B, Z]
        return 0.5 * (mean.square() + std.square() - 1 - torch.log(std.square()))


class WrongMean(Poisson):
    def mean(self, params):  # [B, T, N, 1] instead of [B, T, N]
        return torch.exp(params)


class WrongInit(Poisson):
    def init_params(self, stats):  # [N] instead of [N, P]
        return torch.log(stats.mean.clamp_min(1e-3))


class GlobalRNG(Augmentation):
    Config = Empty

    def __call__(self, batch, ctx):
        keep = torch.rand(batch.encod.shape) > 0.5  # not ctx.generator: not reproducible on resume
        return batch.replace(encod=batch.encod * keep)


class Grows(Augmentation):
    Config = Empty

    def __call__(self, batch, ctx):
        return batch.replace(encod=torch.cat([batch.encod, batch.encod], dim=0))


@attrs.frozen
class WindowConfig:
    width: int = 5


@attrs.frozen
class NeedsValue:
    value: float


class Required(Augmentation):
    Config = NeedsValue

    def __call__(self, batch, ctx):
        return batch


class Window(Augmentation):
    Config = WindowConfig

    def check(self, sizes):
        if self.config.width > sizes.t_in:
            return f"width: {self.config.width} bins is more than the trials' {sizes.t_in} encoder bins"

    def __call__(self, batch, ctx):
        return batch
'''

ENTRY_POINTS = """[lfads.prior]
no_config = lfads_bad:NoConfig
no_kl = lfads_bad:NoKL
not_a_prior = lfads_bad:NotAPrior
per_dim_kl = lfads_bad:PerDimKL
[lfads.reconstruction]
wrong_mean = lfads_bad:WrongMean
wrong_init = lfads_bad:WrongInit
[lfads.augmentation]
global_rng = lfads_bad:GlobalRNG
grows = lfads_bad:Grows
window = lfads_bad:Window
required = lfads_bad:Required
"""


@pytest.fixture
def bad_dist(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "lfads_bad.py").write_text(BAD_MODULE)
    info = site / "lfads_bad-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lfads-bad\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    registry.clear_cache()
    yield site
    monkeypatch.undo()
    sys.modules.pop("lfads_bad", None)
    importlib.invalidate_caches()
    registry.clear_cache()


@pytest.fixture
def spec_file(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        for split, n in (("train", 12), ("valid", 6)):
            x = rng.poisson(2.0, size=(n, 10, 5)).astype(np.float32)
            f[f"{split}_encod_data"] = x
            f[f"{split}_recon_data"] = x
    (tmp_path / "spec.yaml").write_text("data: {path: d.h5, batch_size: 4}\n"
                                        "model:\n  reconstruction: {name: poisson}\n")
    return tmp_path / "spec.yaml"


def validate(spec_file, capsys, *items: str) -> tuple[int, str, str]:
    tiny = [f"model.{k}={v}" for k, v in (
        ("encoder.ic_enc_dim", 8), ("encoder.ci_enc_dim", 4), ("encoder.ic_dim", 4),
        ("generator.gen_dim", 8), ("generator.con_dim", 4), ("generator.co_dim", 2),
        ("generator.fac_dim", 4))]
    args = ["validate", str(spec_file)]
    for item in tiny + list(items):
        args += ["--set", item]
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


CASES = {
    "no Config": (["model.ic_prior={name: no_config}"],
                  ("model.ic_prior", "prior 'no_config' from lfads-bad 0.1", "has no Config")),
    "abstract kl": (["model.ic_prior={name: no_kl}"],
                    ("model.ic_prior", "prior 'no_kl' from lfads-bad 0.1", "does not implement kl")),
    "not a subclass": (["model.co_prior={name: not_a_prior}"],
                       ("model.co_prior", "lfads-bad 0.1", "does not subclass lfads_core.Prior")),
    "kl of shape [B, Z]": (["model.ic_prior={name: per_dim_kl}"],
                           ("model.ic_prior: prior 'per_dim_kl' from lfads-bad 0.1",
                            "kl returned shape [3, 4], expected [3]")),
    "mean of the wrong shape": (["model.reconstruction={name: wrong_mean}"],
                                ("model.reconstruction: reconstruction 'wrong_mean' from lfads-bad 0.1",
                                 "mean returned shape [3, 10, 5, 1], expected [3, 10, 5]")),
    "init_params of the wrong shape": (["model.reconstruction={name: wrong_init}"],
                                       ("reconstruction 'wrong_init' from lfads-bad 0.1",
                                        "init_params returned shape [5], expected [5, 1]")),
    "augmentation on the global RNG": (["model.augmentations=[{name: global_rng}]"],
                                       ("model.augmentations.0: augmentation 'global_rng' from lfads-bad 0.1",
                                        "ctx.generator")),
    "augmentation changing shapes": (["model.augmentations=[{name: grows}]"],
                                     ("augmentation 'grows' from lfads-bad 0.1",
                                      "changed the shape of encod: [3, 10, 5] -> [6, 10, 5]")),
    "augmentation wider than the trials": (["model.augmentations=[{name: window, width: 11}]"],
                                           ("model.augmentations.0 (window): width: 11 bins is more "
                                            "than the trials' 10 encoder bins", "d.h5")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_misbehaving_component_is_a_one_line_error(bad_dist, spec_file, capsys, case):
    items, needles = CASES[case]
    code, out, err = validate(spec_file, capsys, *items)
    assert code == 2, out + err
    assert "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith("error: ")
    for needle in needles:
        assert needle in line, line


def test_well_behaved_components_of_the_same_dist_validate(bad_dist, spec_file, capsys):
    code, out, err = validate(spec_file, capsys, "model.augmentations=[{name: window, width: 10}]")
    assert code == 0, err
    assert "spec ok" in out and "augmentations: window" in out


def test_plugins_check_reports_each_bad_component(bad_dist, capsys):
    code = cli.main(["plugins", "--check"])
    out, err = capsys.readouterr()
    assert code == 2
    lines = {line.split()[1]: line for line in out.splitlines() if "lfads-bad" in line}
    assert "has no Config" in lines["no_config"] and "does not implement kl" in lines["no_kl"]
    assert "does not subclass lfads_core.Prior" in lines["not_a_prior"]
    assert "kl returned shape [3, 3], expected [3]" in lines["per_dim_kl"]
    assert "mean returned shape" in lines["wrong_mean"]
    assert "init_params returned shape [4], expected [4, 1]" in lines["wrong_init"]
    assert "ctx.generator" in lines["global_rng"] and "changed the shape" in lines["grows"]
    assert "[" not in lines["window"]  # conforms
    assert lines["required"].endswith("  not checked: its Config has required fields")
    core = [line for line in out.splitlines() if "lfads-core" in line and line.startswith("prior")]
    assert core and all(line.rstrip().endswith("checked") for line in core)
    assert err.startswith("error: ") and "failed the check" in err


def test_class_problems_of_a_plain_object():
    assert "expected a class" in registry.class_problems("prior", object())[0]


def test_augmentation_hyperparameters_must_be_float_fields_of_its_config():
    import attrs

    @attrs.frozen
    class Config:
        sigma: float = 0.1
        width: int = 3

    def aug(*names):
        return type("Noise", (Augmentation,), {"Config": Config, "hyperparameters": names,
                                               "__call__": lambda self, batch, ctx: batch})

    assert registry.class_problems("augmentation", aug("sigma")) == []
    assert registry.class_problems("augmentation", aug("std")) == [
        "Noise.hyperparameters names 'std', which is not a field of its Config (fields: sigma, width)"]
    assert "'width', a field of type int; hyperparameters are float fields" in registry.class_problems("augmentation", aug("width"))[0]


# --------------------------------------------------------------------------------------- #
# Augmentation generators: saved with the training state
# --------------------------------------------------------------------------------------- #
class Recorder(Augmentation):
    """Wraps an augmentation and records the grad masks it produces in training."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []
        self.rate = inner.rate

    hyperparameters = ("rate",)

    def __call__(self, batch, ctx):
        self.inner.rate = self.rate
        out = self.inner(batch, ctx)
        if ctx.training:
            self.seen.append((ctx.epoch, out.grad_mask.clone()))
        return out


def _trainer(seed: int = 0) -> tuple[Trainer, Recorder]:
    spec = spec_from_dict({"data": {"path": "x"}, "train": {"max_epochs": 3, "seed": seed},
                           "model": {**TINY, "augmentations": [{"name": "coordinated_dropout",
                                                                "rate": 0.4}]}})
    rng = np.random.default_rng(3)
    x = rng.poisson(1.5, size=(24, 8, 5)).astype(np.float32)
    tr, va = to_tensors(Split("train", x[:16], x[:16])), to_tensors(Split("valid", x[16:], x[16:]))
    torch.manual_seed(0)
    model = build_model(spec.model, [SessionShape(5, 5, 8, 8)], [DataStats.from_array(x[:16])])
    rec = Recorder(build_augmentations(spec.model)[0])
    return Trainer(model, [rec], tr, va, spec.train, batch_size=8, log=lambda s: None), rec


def test_resume_reproduces_augmentation_masks():
    straight, rec_a = _trainer()
    straight.run_epoch()
    straight.run_epoch()
    first, rec_b = _trainer()
    first.run_epoch()
    state = first.state_dict()
    resumed, rec_c = _trainer()
    resumed.load_state_dict(state)
    torch.manual_seed(12345)  # the global RNG differs: the masks must not depend on it
    resumed.run_epoch()
    epoch2 = [m for e, m in rec_a.seen if e == 2]
    assert len(epoch2) == 2 and [e for e, _ in rec_c.seen] == [2, 2]
    for a, c in zip(epoch2, [m for _, m in rec_c.seen]):
        assert torch.equal(a, c)
    epoch1 = [m for e, m in rec_a.seen if e == 1]
    assert not torch.equal(epoch1[0], epoch2[0])  # fresh draws every epoch
    assert "aug_rngs" in state and len(state["aug_rngs"]) == 1


def test_augmentation_seeds_follow_train_seed():
    a, rec_a = _trainer(seed=0)
    b, rec_b = _trainer(seed=1)
    a.run_epoch()
    b.run_epoch()
    assert not torch.equal(rec_a.seen[0][1], rec_b.seen[0][1])


def test_augmentation_context_carries_epoch_and_mode():
    seen = []

    class Spy(Augmentation):
        Config = None

        def __init__(self):
            pass

        def __call__(self, batch, ctx):
            seen.append((ctx.epoch, ctx.training, isinstance(ctx.generator, torch.Generator)))
            return batch

    trainer, _ = _trainer()
    trainer.augmentations, trainer.aug_rngs = [Spy()], [torch.Generator()]
    trainer.run_epoch()
    trainer.run_epoch()
    assert set(seen) == {(1, True, True), (1, False, True), (2, True, True), (2, False, True)}


def test_penalty_and_reconstruction_metrics_in_the_epoch_row():
    trainer, _ = _trainer()
    row = trainer.run_epoch()
    assert "train_penalty" in row and row["train_penalty"] == 0.0
    assert not any(k.startswith(("train_metric_", "valid_metric_")) for k in row)


# --------------------------------------------------------------------------------------- #
# Hook-provided subcommands and synthetic datasets
# --------------------------------------------------------------------------------------- #
HOOKS_MODULE = '''
from lfads_core import Command, SynthDataset, hookimpl
from lfads_core.errors import DataError


def configure(parser):
    parser.add_argument("word")


def run(args):
    if args.word == "bad":
        raise DataError("greet: 'bad' is not a greeting")
    print(f"hello {args.word}")


@hookimpl
def lfads_commands():
    return [Command("greet", "say hello", configure, run),
            Command("validate", "shadows a built-in", configure, run),
            Command("prepare", "shadows a built-in too", configure, run)]


@hookimpl
def lfads_synth_datasets():
    return [SynthDataset("lorenz", "a second lorenz", lambda seed: {})]
'''


@pytest.fixture
def hook_dist(tmp_path, monkeypatch):
    (tmp_path / "greeter.py").write_text(HOOKS_MODULE)
    info = tmp_path / "lfads_greeter-0.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lfads-greeter\nVersion: 0.2\n")
    (info / "entry_points.txt").write_text("[lfads]\ngreeter = greeter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    hooks.clear_cache()
    yield tmp_path
    monkeypatch.undo()
    sys.modules.pop("greeter", None)
    hooks.clear_cache()


def test_plugin_subcommand_runs_and_is_in_help(hook_dist, capsys):
    assert cli.main(["greet", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"
    assert cli.main(["greet", "bad"]) == 2
    assert capsys.readouterr().err == "error: greet: 'bad' is not a greeting\n"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "greet" in out and "say hello (lfads-greeter 0.2)" in out


def test_plugin_cannot_replace_builtins(hook_dist, capsys):
    rows = {(r["kind"], r["name"], r["distribution"]): r["status"] for r in hooks.listing()}
    assert "built-in command" in rows[("command", "validate", "lfads-greeter")]
    assert "built-in command" in rows[("command", "prepare", "lfads-greeter")]
    assert rows[("command", "greet", "lfads-greeter")] == "ok"
    assert "is a synthetic dataset of lfads-core" in rows[("synth", "lorenz", "lfads-greeter")]
    assert rows[("synth", "lorenz", "lfads-core")] == "ok"  # the core's keeps working
    assert hooks.synth_datasets()["lorenz"][0].dist == "lfads-core"
    with pytest.raises(SystemExit):
        cli.main(["validate", "--help"])
    assert "Check a spec" in capsys.readouterr().out


def test_help_without_the_plugin_has_no_plugin_commands(capsys):
    hooks.clear_cache()
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "greet" not in out
    for name in ("validate", "plugins", "synth", "sample"):
        assert f"  {name}" in out


def test_unknown_subcommand_is_a_one_line_error(capsys):
    assert cli.main(["frobnicate", "x.h5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: frobnicate: no such spec file or subcommand") and err.count("\n") == 1


def test_a_recording_given_as_the_spec_points_to_prepare(capsys):
    assert cli.main(["rec/spikes.npz", "--trials", "rec/trials.csv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: rec/spikes.npz: a recording, not a spec; bin it into lfads's input "
                          "format first: lfads-run prepare rec/spikes.npz --out FILE.h5") and err.count("\n") == 1


def test_check_data_gets_the_whole_array_and_names_channels():
    from lfads_spikes.poisson import Poisson

    x = np.zeros((4, 3, 6), np.float32)
    x[1, 2, 2] = -1.0
    x[0, 0, 5] = np.nan
    msg = Poisson(Poisson.Config(), n_channels=6).check_data(x)
    assert "negative values in channel 2 " in msg


def test_public_api_is_lazy_and_complete():
    import subprocess

    code = ("import sys, lfads_core; assert 'torch' not in sys.modules; "
            "from lfads_core import Prior, Reconstruction, Augmentation, Batch, DataStats, "
            "AugmentContext, DataSizes, Command, SynthDataset, hookimpl, Readin, Readout, Encoder, "
            "Generator, EncoderOutput, GeneratorOutput; print('ok')")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=120)
    assert res.stdout.strip() == "ok", res.stderr


def test_every_spec_problem_is_one_error_line(spec_file, capsys):
    code, out, err = validate(spec_file, capsys, "train.lr=-1", "train.kl.ic_scale=-2",
                              "model.encoder.ic_dimm=3", "data.batch_size=0")
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 4 and all(line.startswith(f"error: {spec_file}: ") for line in lines)
    for needle in ("data.batch_size: must be >= 1", "model.encoder.ic_dimm: unknown key",
                   "train.lr: must be > 0", "train.kl.ic_scale: must be >= 0"):
        assert sum(needle in line for line in lines) == 1, (needle, lines)


def test_a_monte_carlo_kl_may_be_negative_on_a_batch():
    """A prior without a closed-form KL (e.g. Student-t) estimates it by sampling; a single
    estimate can be slightly negative, which the checks must accept (only shape and finiteness)."""
    import attrs as _attrs

    from lfads_core import Prior

    @_attrs.frozen
    class Cfg:
        pass

    class MonteCarloStudentT(Prior):
        Config = Cfg

        def __init__(self, config, shape):
            super().__init__()
            self.t = torch.distributions.StudentT(3.0)

        def kl(self, mean, std):
            u = mean + std * torch.randn_like(std)  # one sample
            q = torch.distributions.Normal(mean, std)
            kl = q.log_prob(u) - self.t.log_prob(u)
            return kl.reshape(kl.shape[0], -1).sum(1) - 5.0  # pushed below 0 on purpose

    assert component_problems("prior", MonteCarloStudentT) == []


def test_trainer_takes_any_batch_source():
    """The loop iterates what it is given: a BatchSource gives the same epoch as the TensorSplit it
    wraps, and a source of another shape (here: every batch twice) is simply iterated."""
    from lfads_core.data.batches import SplitBatches

    a, _ = _trainer()
    row_a = a.run_epoch()
    b, _ = _trainer()
    b.train_batches = SplitBatches(b.train_batches.data, 8)
    row_b = b.run_epoch()
    assert row_a["train_loss"] == row_b["train_loss"] and row_a["valid_recon"] == row_b["valid_recon"]

    class Twice:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __call__(self, generator=None):
            self.calls += 1
            for batch in self.inner(generator):
                yield batch
                yield batch

    c, _ = _trainer()
    c.train_batches = twice = Twice(c.train_batches)
    assert c.run_epoch() is not None and twice.calls == 1


def test_a_value_a_synth_generator_refuses_is_one_line(tmp_path, capsys):
    """A generator's ValueError is a one-line error, not a traceback, for the core's datasets and
    plugins' alike (the core catches it; plugins need not)."""
    import lfads_core.hooks as h

    def refuse(seed):
        raise ValueError("n_bins must be positive, got 0")

    provided = h.synth_datasets()["rnn"][0]
    object.__setattr__(provided.item, "make", refuse)
    try:
        assert cli.main(["synth", "rnn", "--out", str(tmp_path / "r.h5")]) == 2
    finally:
        h.clear_cache()
    err = capsys.readouterr().err
    assert err == "error: synth rnn: n_bins must be positive, got 0\n"
    assert not (tmp_path / "r.h5").exists()
