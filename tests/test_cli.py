"""Subprocess tests of ``lfads-run``: subcommands, one-line errors with exit code 2 for every kind
of bad input, and tiny end-to-end training runs (outputs, resume, interruption, run-directory
protection, re-sampling).

Every subprocess runs with one thread (OMP_NUM_THREADS=1, LFADS_THREADS=1); models and data are
tiny, so each training run takes a few seconds.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".venv" / "bin" / "lfads-run"
LFADS_RUN = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "lfads_core.cli"]
LORENZ_YAML = REPO / "examples" / "lorenz.yaml"

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "LFADS_THREADS": "1", "MKL_NUM_THREADS": "1",
       "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}

N_TRAIN, N_VALID, T, N = 32, 16, 20, 8
# Small model dims through --set (the spec file is examples/lorenz.yaml).
TINY = ["model.encoder.ic_enc_dim=8", "model.encoder.ci_enc_dim=4", "model.encoder.ic_dim=4",
        "model.generator.gen_dim=8", "model.generator.con_dim=4", "model.generator.co_dim=2",
        "model.generator.fac_dim=4", "data.batch_size=16", "train.max_epochs=2",
        "train.kl.ramp_epochs=0", "train.l2.ramp_epochs=0", "sampling.num_samples=3"]
OUTPUT_FIELDS = ("output_params", "factors", "ic_mean", "ic_std", "co_means", "co_stds",
                 "gen_states", "gen_inputs", "inds")


# --------------------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------------------- #
def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env_extra: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*LFADS_RUN, *map(str, args)], cwd=cwd, env={**ENV, **(env_extra or {})},
                          capture_output=True, text=True, timeout=timeout)


def sets(*items: str) -> list[str]:
    out = []
    for item in items:
        out += ["--set", item]
    return out


def assert_ok(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, stderr exactly one line ``error: ...`` mentioning every needle, no traceback."""
    assert res.returncode == 2, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{res.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def counts_data(n_train: int = N_TRAIN, n_valid: int = N_VALID, t: int = T, n: int = N,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Poisson counts with smooth ground-truth rates, in the LFADS input format."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, trials in (("train", n_train), ("valid", n_valid)):
        phase = rng.uniform(0, 2 * np.pi, size=(trials, 1, 1))
        tt = np.linspace(0, 2 * np.pi, t)[None, :, None]
        gain = rng.uniform(0.5, 1.5, size=(1, 1, n))
        rates = np.exp(0.3 + 0.8 * np.sin(tt + phase) * gain).astype(np.float32)
        spikes = rng.poisson(rates).astype(np.float32)
        out[f"{split}_encod_data"] = spikes
        out[f"{split}_recon_data"] = spikes.copy()
        out[f"{split}_truth"] = rates
    return out


def write_h5(path: Path, data: dict[str, np.ndarray], **attrs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, arr in data.items():
            f[key] = arr
        for key, value in attrs.items():
            f.attrs[key] = value
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def epoch_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("epoch ")]


# --------------------------------------------------------------------------------------- #
# Fixtures
# --------------------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with examples/lorenz.yaml as spec.yaml and a tiny data file at its data.path."""
    root = tmp_path_factory.mktemp("cli")
    shutil.copy(LORENZ_YAML, root / "spec.yaml")
    write_h5(root / "data" / "lorenz.h5", counts_data(), bin_size_ms=10.0)
    return root


@pytest.fixture(scope="module")
def trained(work) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished 2-epoch run of the tiny spec: (run dir, process result)."""
    run_dir = work / "runs" / "base"
    res = run_cli(work / "spec.yaml", *sets(*TINY), "--out", run_dir, cwd=work)
    assert_ok(res)
    return run_dir, res


def train_cmd(work: Path, out: Path, *extra: str) -> list[str]:
    return [str(work / "spec.yaml"), *sets(*TINY, *extra), "--out", str(out)]


# --------------------------------------------------------------------------------------- #
# Subcommands
# --------------------------------------------------------------------------------------- #
def test_help():
    res = run_cli("--help")
    assert_ok(res)
    assert "lfads-run" in res.stdout and "--set" in res.stdout


def test_synth_lorenz(tmp_path):
    out = tmp_path / "sub" / "lorenz.h5"
    res = run_cli("synth", "lorenz", "--out", out)
    assert_ok(res)
    assert str(out) in res.stdout
    with h5py.File(out, "r") as f:
        for split in ("train", "valid"):
            encod, recon = f[f"{split}_encod_data"], f[f"{split}_recon_data"]
            assert encod.ndim == 3 and encod.shape == recon.shape
            assert f[f"{split}_truth"].shape == recon.shape
        assert f["train_encod_data"].shape[1:] == f["valid_encod_data"].shape[1:]


def test_synth_unwritable_out(tmp_path):
    (tmp_path / "afile").write_text("x")
    res = run_cli("synth", "lorenz", "--out", tmp_path / "afile" / "x.h5")
    assert_one_line_error(res, "--out", "afile")


def test_validate(work):
    res = run_cli("validate", work / "spec.yaml", *sets(*TINY), cwd=work)
    assert_ok(res)
    assert "spec ok" in res.stdout
    assert f"{N_TRAIN} trials" in res.stdout and f"{N_VALID} trials" in res.stdout
    assert "poisson" in res.stdout
    assert not (work / "runs" / "lorenz").exists()  # validate trains nothing, writes nothing


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_validate_cuda_without_cuda_is_an_error_before_spec_ok(work):
    res = run_cli("validate", work / "spec.yaml", *sets(*TINY), "--device", "cuda", cwd=work)
    assert_one_line_error(res, "train.device: cuda asked for", "use cpu or auto")
    assert "spec ok" not in res.stdout, res.stdout


def test_validate_says_when_steps_are_compiled_on_the_cpu(work):
    res = run_cli("validate", work / "spec.yaml", *sets(*TINY, "train.compile=on"), cwd=work,
                  env_extra={"LFADS_FUSED_CPU": "0"})
    assert_ok(res)
    assert "fused CPU kernels: off (LFADS_FUSED_CPU=0); compiled steps on" in res.stdout, res.stdout


def test_validate_example_with_synth_data(tmp_path):
    shutil.copy(LORENZ_YAML, tmp_path / "lorenz.yaml")
    assert_ok(run_cli("synth", "lorenz", "--out", tmp_path / "data" / "lorenz.h5"))
    res = run_cli("validate", tmp_path / "lorenz.yaml")
    assert_ok(res)
    assert "spec ok" in res.stdout
    assert "recon 100 bins x 40 ch, truth, latents, conditions" in res.stdout  # what the file has


def test_plugins_text():
    res = run_cli("plugins")
    assert_ok(res)
    rows = [line.split() for line in res.stdout.splitlines()]
    assert ["reconstruction", "poisson", "lfads-spikes"] in [r[:3] for r in rows]
    assert ["prior", "normal", "lfads-core"] in [r[:3] for r in rows]


def test_plugins_json():
    res = run_cli("plugins", "--json")
    assert_ok(res)
    rows = json.loads(res.stdout)
    assert isinstance(rows, list) and rows
    for row in rows:
        assert {"kind", "name", "distribution", "version", "status"} <= set(row)
    by_key = {(r["kind"], r["name"]): r for r in rows}
    poisson = by_key[("reconstruction", "poisson")]
    assert poisson["distribution"] == "lfads-spikes" and poisson["status"] == "ok"
    for kind, name in [("readin", "identity"), ("encoder", "bigru"), ("generator", "gru"),
                       ("readout", "linear"), ("prior", "normal"), ("prior", "ar_normal"),
                       ("reconstruction", "gaussian"), ("augmentation", "coordinated_dropout")]:
        assert by_key[(kind, name)]["distribution"] == "lfads-core"
        assert by_key[(kind, name)]["status"] == "ok"


# --------------------------------------------------------------------------------------- #
# Bad input: exit 2, one line on stderr, no traceback
# --------------------------------------------------------------------------------------- #
def _bad_files(root: Path) -> dict[str, Path]:
    """Data files, each with one problem."""
    files = {}

    def variant(name: str, change) -> None:
        data = counts_data()
        change(data)
        files[name] = write_h5(root / f"{name}.h5", data)

    files["not_hdf5"] = root / "not_hdf5.h5"
    files["not_hdf5"].write_text("this is a text file, not HDF5\n")
    variant("missing_key", lambda d: d.pop("valid_recon_data"))
    variant("trials", lambda d: d.update(train_recon_data=d["train_recon_data"][:30]))
    variant("channels", lambda d: d.update(valid_encod_data=d["valid_encod_data"][:, :, :7],
                                           valid_recon_data=d["valid_recon_data"][:, :, :7]))
    variant("two_dims", lambda d: d.update(train_encod_data=d["train_encod_data"][:, :, 0]))
    variant("nan", lambda d: d["train_encod_data"].__setitem__((3, 4, 5), np.nan))
    variant("inf", lambda d: d["valid_recon_data"].__setitem__((1, 2, 3), np.inf))
    variant("negative", lambda d: d["train_recon_data"].__setitem__((0, 0, 0), -1.0))
    variant("fractional", lambda d: d.update(valid_recon_data=d["valid_recon_data"] + 0.5))
    (root / "a_directory.h5").mkdir(exist_ok=True)
    files["a_directory"] = root / "a_directory.h5"
    (root / "broken.yaml").write_text("data: {path: x.h5\nmodel: [\n")
    (root / "misspelt.yaml").write_text(LORENZ_YAML.read_text().replace("\ntrain:", "\ntrian:", 1))
    return files


def _bad_cases(work: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """name -> (argv, substrings the error line must contain)."""
    bad = work / "bad"
    bad.mkdir(exist_ok=True)
    files = _bad_files(bad)
    spec = str(work / "spec.yaml")
    out = ["--out", str(work / "runs" / "bad")]

    def train(*items: str, data: str | None = None) -> list[str]:
        extra = [f"data.path={data}"] if data else []
        return [spec, *sets(*TINY, *extra, *items), *out]

    return {
        # spec problems
        "unknown_component": (train("model.reconstruction.name=poison"),
                              ("model.reconstruction", "'poison'", "poisson", "gaussian",
                               "did you mean 'poisson'")),
        "misspelt_key": (train("model.generator.gen_dimm=3"),
                         ("model.generator.gen_dimm", "unknown key", "did you mean 'gen_dim'")),
        "misspelt_key_in_file": ([str(bad / "misspelt.yaml")],
                                 ("misspelt.yaml", "trian", "did you mean 'train'")),
        "string_for_int": (train('model.generator.gen_dim="64"'),
                           ("model.generator.gen_dim", "expected an integer", "'64'")),
        "float_for_int": (train("model.generator.gen_dim=1.5"),
                          ("model.generator.gen_dim", "expected an integer", "1.5")),
        "bool_for_int": (train("model.generator.gen_dim=true"),
                         ("model.generator.gen_dim", "expected an integer", "True")),
        "negative_dim": (train("model.encoder.ic_dim=-4"),
                         ("model.encoder.ic_dim", "must be >= 1", "-4")),
        "rate_ge_1": (train("model.augmentations.0.rate=1.0"), ("rate", "must be in [0, 1)", "1.0")),
        "bad_set_syntax": (train("model.generator.gen_dim"), ("--set", "KEY=VALUE")),
        "bad_set_index": (train("model.augmentations.3.rate=0.1"), ("model.augmentations", "3")),
        "yaml_syntax": ([str(bad / "broken.yaml")], ("broken.yaml", "YAML syntax error", "line 2")),
        "missing_spec": ([str(bad / "nothere.yaml")], ("nothere.yaml", "not found")),
        # data problems
        "missing_data": (train(data=str(bad / "nothere.h5")), ("nothere.h5", "not found")),
        "data_is_directory": (train(data=str(files["a_directory"])), ("a_directory.h5", "directory")),
        "not_hdf5": (train(data=str(files["not_hdf5"])), ("not_hdf5.h5", "HDF5")),
        "missing_key": (train(data=str(files["missing_key"])), ("missing_key.h5", "valid_recon_data")),
        "trial_mismatch": (train(data=str(files["trials"])),
                           ("trials.h5", "train_recon_data", "32", "30")),
        "channel_mismatch": (train(data=str(files["channels"])), ("channels.h5", "valid_", "7", "8")),
        "two_dims": (train(data=str(files["two_dims"])), ("two_dims.h5", "train_encod_data", "3 dim")),
        "ci_lag_too_large": (train("model.encoder.ci_lag=20"),
                             ("model.encoder.ci_lag", "20", "lorenz.h5")),
        "validate_ci_lag": (["validate", spec, *sets(*TINY, "model.encoder.ci_lag=25")],
                            ("model.encoder.ci_lag", "25")),
        "nan_without_augmentation": (train(data=str(files["nan"])),
                                     ("nan.h5", "train_encod_data", "NaN", "augmentation")),
        "inf": (train(data=str(files["inf"])), ("inf.h5", "valid_recon_data", "infinite")),
        "negative_counts": (train(data=str(files["negative"])),
                            ("negative.h5", "train_recon_data", "negative", "Poisson")),
        "fractional_counts": (train(data=str(files["fractional"])),
                              ("fractional.h5", "valid_recon_data", "non-integer", "Poisson")),
        # run directory problems
        "sample_not_a_run": (["sample", str(bad)], (str(bad), "not a run directory")),
    }


@pytest.fixture(scope="module")
def bad_results(work) -> dict[str, tuple[subprocess.CompletedProcess, tuple[str, ...]]]:
    """Run every bad-input case once, two at a time (each process uses one thread)."""
    cases = _bad_cases(work)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_cli, *argv, cwd=work, timeout=120)
                   for name, (argv, _) in cases.items()}
        return {name: (futures[name].result(), cases[name][1]) for name in cases}


BAD_CASES = ["unknown_component", "misspelt_key", "misspelt_key_in_file",
             "string_for_int", "float_for_int", "bool_for_int", "negative_dim",
             "rate_ge_1", "bad_set_syntax", "bad_set_index", "yaml_syntax",
             "missing_spec", "missing_data", "data_is_directory", "not_hdf5", "missing_key",
             "trial_mismatch", "channel_mismatch", "two_dims", "ci_lag_too_large",
             "validate_ci_lag", "nan_without_augmentation", "inf",
             "negative_counts", "fractional_counts", "sample_not_a_run"]


def test_bad_case_list_is_complete(bad_results):
    assert sorted(BAD_CASES) == sorted(bad_results)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_one_line_exit_2(bad_results, case):
    res, needles = bad_results[case]
    assert_one_line_error(res, *needles)


def test_bad_input_writes_no_run(bad_results, work):
    assert not (work / "runs" / "bad" / "checkpoints").exists()


def test_debug_shows_traceback(work):
    res = run_cli(*train_cmd(work, work / "runs" / "debug", "model.generator.gen_dim=-1"), "--debug",
                  cwd=work)
    assert res.returncode == 2  # the same exit code as without --debug
    assert "Traceback" in res.stderr and "SpecError" in res.stderr
    assert res.stderr.rstrip().splitlines()[-1].startswith("error: ") and "model.generator.gen_dim" in res.stderr


def test_debug_shows_traceback_for_data_errors(work):
    res = run_cli("validate", work / "spec.yaml", *sets(*TINY, "data.path=nothere.h5"), "--debug",
                  cwd=work)
    assert res.returncode == 2
    assert "Traceback" in res.stderr and "DataError" in res.stderr


# --------------------------------------------------------------------------------------- #
# End-to-end training
# --------------------------------------------------------------------------------------- #
def test_train_writes_run_directory(trained):
    run_dir, _ = trained
    for rel in ("spec.yaml", "metrics.csv", "checkpoints/last.pt", "checkpoints/best.pt",
                "lfads_output.h5"):
        assert (run_dir / rel).is_file(), rel
    pngs = sorted((run_dir / "plots").glob("*.png"))
    assert pngs, "no plots"
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert not list(run_dir.rglob("*.tmp")), "temporary files left behind"


def test_train_resolved_spec(trained, work):
    run_dir, _ = trained
    saved = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert saved["model"]["generator"]["gen_dim"] == 8
    assert saved["model"]["readin"]["name"] == "identity"  # defaults are written out
    assert saved["data"]["path"] == str((work / "data" / "lorenz.h5").resolve())
    assert saved["output"] == str(run_dir)
    assert saved["sampling"]["num_samples"] == 3


def test_train_metrics_and_checkpoints(trained):
    run_dir, _ = trained
    rows = read_metrics(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # epochs completed, from 1 (user guide)
    for row in rows:
        assert np.isfinite(float(row["train_recon"])) and np.isfinite(float(row["valid_recon"]))
    last = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert last["trainer"]["epoch"] == 2
    best = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert best["epoch"] in (1, 2) and "model" in best


def test_train_output_file(trained):
    run_dir, _ = trained
    with h5py.File(run_dir / "lfads_output.h5", "r") as f:
        assert int(f.attrs["num_samples"]) == 3
        for split, n in (("train", N_TRAIN), ("valid", N_VALID)):
            for field in OUTPUT_FIELDS:
                assert f"{split}_{field}" in f, f"{split}_{field}"
            assert f[f"{split}_output_params"].shape == (n, T, N)
            assert f[f"{split}_factors"].shape == (n, T, 4)
            assert f[f"{split}_gen_states"].shape == (n, T, 8)
            assert f[f"{split}_ic_mean"].shape == (n, 4) == f[f"{split}_ic_std"].shape
            assert f[f"{split}_co_means"].shape == (n, T, 2) == f[f"{split}_co_stds"].shape
            assert np.array_equal(np.sort(f[f"{split}_inds"][()]), np.arange(n))
            rates = f[f"{split}_output_params"][()]
            assert np.all(np.isfinite(rates)) and np.all(rates > 0)
            assert np.all(f[f"{split}_ic_std"][()] > 0)


def test_train_prints_one_line_per_epoch(trained):
    _, res = trained
    lines = epoch_lines(res.stdout)
    assert len(lines) == 2, res.stdout
    assert lines[0].startswith("epoch 1/2") and lines[1].startswith("epoch 2/2")
    assert "\r" not in res.stdout  # no progress bar when not on a terminal


def test_sample_rewrites_output(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    before = (run_dir / "lfads_output.h5").stat().st_mtime_ns
    time.sleep(0.01)
    res = run_cli("sample", run_dir, "--samples", "5")
    assert_ok(res)
    assert (run_dir / "lfads_output.h5").stat().st_mtime_ns != before
    with h5py.File(run_dir / "lfads_output.h5", "r") as f:
        assert int(f.attrs["num_samples"]) == 5
        assert f["valid_output_params"].shape == (N_VALID, T, N)
    # sampling again changes nothing about training
    assert len(read_metrics(run_dir)) == 2


def test_sample_default_uses_spec_num_samples(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    (run_dir / "lfads_output.h5").unlink()
    assert_ok(run_cli("sample", run_dir))
    with h5py.File(run_dir / "lfads_output.h5", "r") as f:
        assert int(f.attrs["num_samples"]) == 3


def test_resume_continues_to_new_max_epochs(trained, work, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    res = run_cli(*train_cmd(work, run_dir, "train.max_epochs=4"), cwd=work)
    assert_ok(res)
    assert "resuming" in res.stdout
    lines = epoch_lines(res.stdout)
    assert [line.split()[1] for line in lines] == ["3/4", "4/4"], res.stdout
    assert [int(r["epoch"]) for r in read_metrics(run_dir)] == [1, 2, 3, 4]
    last = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert last["trainer"]["epoch"] == 4
    assert yaml.safe_load((run_dir / "spec.yaml").read_text())["train"]["max_epochs"] == 4


def test_rerun_of_a_finished_run_trains_nothing(trained, work, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    res = run_cli(*train_cmd(work, run_dir), cwd=work)
    assert_ok(res)
    assert epoch_lines(res.stdout) == []
    assert [int(r["epoch"]) for r in read_metrics(run_dir)] == [1, 2]


def test_interrupted_run_resumes_consistently(work, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [*LFADS_RUN, *train_cmd(work, run_dir, "train.max_epochs=30")]
    proc = subprocess.Popen(cmd, cwd=work, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None, "run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.02)
        assert proc.poll() is None, "run finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu",
                             weights_only=False)["trainer"]["epoch"]
    assert 1 <= done_before < 30

    res = run_cli(*cmd[len(LFADS_RUN):], cwd=work)
    assert_ok(res)
    assert "resuming" in res.stdout
    assert len(epoch_lines(res.stdout)) == 30 - done_before
    rows = read_metrics(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 31))
    last = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert last["trainer"]["epoch"] == 30 and len(last["trainer"]["history"]) == 30
    best = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    assert 1 <= best["epoch"] <= 30
    assert (run_dir / "lfads_output.h5").is_file()


def test_different_spec_refused_then_forced(trained, work, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    before = snapshot(run_dir)

    res = run_cli(*train_cmd(work, run_dir, "model.generator.gen_dim=6", "train.lr=0.0123"), cwd=work)
    line = assert_one_line_error(res, str(run_dir), "model.generator.gen_dim: 8 -> 6",
                                 "train.lr: ", "-> 0.0123", "--force")  # every differing field
    assert snapshot(run_dir) == before, "a refused run changed the old run directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    res = run_cli(*train_cmd(work, run_dir, "model.generator.gen_dim=6"), "--force", cwd=work)
    assert_ok(res)
    asides = [p for p in tmp_path.iterdir() if p.name != "run"]
    assert len(asides) == 1 and asides[0].name.startswith("run"), asides
    assert snapshot(asides[0]) == before, "the old run was not kept intact"
    saved = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert saved["model"]["generator"]["gen_dim"] == 6
    assert [int(r["epoch"]) for r in read_metrics(run_dir)] == [1, 2]  # started over
    assert len(epoch_lines(res.stdout)) == 2


def test_bad_input_on_an_existing_run_changes_nothing(trained, work, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    before = snapshot(run_dir)
    for extra in (["model.generator.gen_dim=-1"], ["model.encoder.ci_lag=20"],
                  ["data.path=nothere.h5"]):
        res = run_cli(*train_cmd(work, run_dir, *extra), "--force", cwd=work)
        assert_one_line_error(res)
        assert snapshot(run_dir) == before, extra
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("below", [False, True], ids=["file", "under-a-file"])
def test_out_that_is_a_file(work, tmp_path, below):
    existing = tmp_path / "afile"
    existing.write_text("keep me\n")
    res = run_cli(*train_cmd(work, existing / "run" if below else existing), cwd=work)
    assert existing.read_text() == "keep me\n"
    assert_one_line_error(res, str(existing))
