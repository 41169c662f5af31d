"""``lfads-run pcr SPEC`` end to end on small session files (no training)."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from lfads_core.cli import main

SPEC = """\
data: {{path: {path}}}
model:
  readin: {{name: {readin}}}
  encoder: {{name: bigru, ic_enc_dim: 8, ci_enc_dim: 8, ic_dim: 4}}
  generator: {{name: gru, gen_dim: 16, con_dim: 8, co_dim: 2, fac_dim: 4}}
  readout: {{name: multisession}}
  reconstruction: {{name: gaussian}}
"""


def write_sessions(folder, synth, labels=True):
    folder.mkdir(exist_ok=True)
    paths = []
    for i, (x, cond) in enumerate(zip(synth.data, synth.cond)):
        path = folder / f"session{i}.h5"
        valid = np.arange(len(cond)) % 5 == 0
        with h5py.File(path, "w") as f:
            for split, sel in (("train", ~valid), ("valid", valid)):
                f[f"{split}_encod_data"] = x[sel]
                f[f"{split}_recon_data"] = x[sel]
                if labels:
                    f[f"{split}_cond"] = cond[sel]
            f.attrs["bin_size_ms"] = 10.0
        paths.append(path)
    return paths


def spec_file(tmp_path, path, readin="multisession, dim: 3"):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(path=path, readin=readin))
    return spec


def run(capsys, *argv):
    code = main(["pcr", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_pcr_on_a_glob_of_sessions(tmp_path, capsys, synth):
    write_sessions(tmp_path / "data", synth)
    code, out, err = run(capsys, spec_file(tmp_path, "data/session*.h5"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "mode: condition averages over 6 shared conditions (0, 1, 2, 3, 4, 5)"
    assert lines[1].startswith("readin dim 3: 3 principal components; smoothing sd 2 bins; ridge 0.01")
    assert lines[2].split() == ["session", "trials", "neurons", "conditions", "var", "by", "readin",
                                "var", "in", "shared", "PCs"]
    rows = [line.split() for line in lines[3:6]]
    assert [r[:4] for r in rows] == [["session0", "24", "30", "6"], ["session1", "24", "20", "6"],
                                     ["session2", "24", "12", "6"]]
    for r in rows:
        assert float(r[-2].rstrip("%")) > 99 and float(r[-1].rstrip("%")) > 99
    assert lines[6].startswith("shared PCs: the 3 components explain ")
    assert float(lines[6].split()[6].rstrip("%")) > 99


def test_pcr_with_a_list_and_overrides(tmp_path, capsys, synth):
    paths = write_sessions(tmp_path / "data", synth)
    spec = spec_file(tmp_path, "[" + ", ".join(str(p) for p in paths[:2]) + "]")
    code, out, err = run(capsys, spec, "--set", "model.readin.dim=70", "--set",
                         "model.readin.smooth_bins=0")
    assert code == 0, err
    assert "readin dim 70: 70 principal components; smoothing sd 0 bins" in out
    assert "session2" not in out and "session1" in out
    assert "(rank 50; 20 zero components padded)" in out  # 30 + 20 neurons


def test_pcr_on_one_file(tmp_path, capsys, synth):
    paths = write_sessions(tmp_path / "data", synth)
    code, out, err = run(capsys, spec_file(tmp_path, paths[1]))
    assert code == 0, err
    assert "mode: condition averages over 6 shared conditions" in out
    assert "session1" in out


def test_pcr_without_condition_labels_uses_single_trials(tmp_path, capsys, synth):
    write_sessions(tmp_path / "data", synth, labels=False)
    code, out, err = run(capsys, spec_file(tmp_path, "data/*.h5"))
    assert code == 0, err
    assert out.splitlines()[0] == ("mode: single trials, each session in its own principal subspace "
                                   "(3 of 3 session(s) have no condition labels (train_cond))")
    assert "var in own PCs" in out and "shared PCs:" not in out


def test_pcr_notes_a_random_init(tmp_path, capsys, synth):
    write_sessions(tmp_path / "data", synth)
    code, out, _ = run(capsys, spec_file(tmp_path, "data/*.h5", "multisession, dim: 2, init: random"))
    assert code == 0 and "model.readin.init is 'random'" in out


def test_pcr_needs_the_multisession_readin(tmp_path, capsys, synth):
    paths = write_sessions(tmp_path / "data", synth)
    code, out, err = run(capsys, spec_file(tmp_path, paths[0], "identity"))
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith("error: ") and "model.readin" in line and "'identity'" in line


def test_pcr_reports_spec_and_data_errors_in_one_line(tmp_path, capsys, synth):
    write_sessions(tmp_path / "data", synth)
    code, _, err = run(capsys, spec_file(tmp_path, "data/*.h5"), "--set", "model.readin.dim=0")
    assert code == 2 and len(err.splitlines()) == 1 and "model.readin.dim: must be >= 1" in err
    code, _, err = run(capsys, spec_file(tmp_path, "nothing/*.h5"))
    assert code == 2 and len(err.splitlines()) == 1 and "no file matches" in err


def test_hook_module_is_light():
    code = ("import sys, lfads_multisession.hooks as h; "
            "print(sorted(m for m in ('numpy', 'torch', 'h5py') if m in sys.modules)); "
            "print([c.name for c in h.lfads_commands()])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "['pcr']"]


def test_help_lists_the_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["pcr", "--help"])
    assert info.value.code == 0
    assert "--set KEY=VALUE" in capsys.readouterr().out
