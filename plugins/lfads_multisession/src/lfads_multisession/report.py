"""``lfads-run pcr SPEC``: the PCR of a spec's sessions, as a table."""

from __future__ import annotations

import math
from typing import Iterable, Optional, TextIO

from lfads_core import load_session_data, load_spec
from lfads_core.errors import SpecError

from . import pcr as _pcr


def _pct(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100.0 * value:.1f}%"


def run_pcr(path: str, overrides: Iterable[str] = (), out: Optional[TextIO] = None) -> _pcr.PCRResult:
    """Load the spec and its sessions, compute PCR with the readin's options, print the report
    (to ``out``, default stdout) and return the result."""
    spec = load_spec(path, list(overrides))
    readin = spec.model.readin
    if readin.name != "multisession":
        raise SpecError(f"{path}: model.readin: lfads-run pcr needs readin 'multisession', got "
                        f"'{readin.name}' (e.g. --set 'model.readin={{name: multisession, dim: 40}}')")
    config = readin.config
    sessions = load_session_data(spec)
    result = _pcr.pcr([s.encod for s in sessions], [s.recon for s in sessions],
                      [s.cond for s in sessions], k=config.dim, smooth_bins=config.smooth_bins,
                      ridge=config.ridge)
    write_report(result, sessions, config, out)
    return result


def write_report(result: _pcr.PCRResult, sessions, config, out: Optional[TextIO] = None) -> None:
    def say(text: str = "") -> None:
        print(text, file=out)

    k = result.k
    if result.mode == _pcr.CONDITION:
        labels = ", ".join(str(c) for c in result.conditions[:12])
        more = f", ... ({len(result.conditions)} in all)" if len(result.conditions) > 12 else ""
        say(f"mode: condition averages over {len(result.conditions)} shared conditions "
            f"({labels}{more})")
    else:
        say(f"mode: single trials, each session in its own principal subspace ({result.reason})")
    say(f"readin dim {k}: {k} principal components; smoothing sd {config.smooth_bins:g} bins; "
        f"ridge {config.ridge:g}" + ("" if config.init == "pcr" else
                                     f" (note: model.readin.init is '{config.init}', so a run "
                                     f"does not use this)"))
    pcs = "var in shared PCs" if result.mode == _pcr.CONDITION else "var in own PCs"
    header = ["session", "trials", "neurons", "conditions", "var by readin", pcs]
    rows = []
    for s, p in zip(sessions, result.sessions):
        n_in, n = s.encod.shape[2], s.recon.shape[2]
        neurons = str(n) if n_in == n else f"{n} ({n_in} in)"
        if result.mode == _pcr.CONDITION:
            own = len(set(s.cond.tolist()))
            conds = f"{len(result.conditions)} of {own}"
            trials = f"{p.trials} of {s.recon.shape[0]}" if p.trials != s.recon.shape[0] else str(p.trials)
        else:
            conds, trials = "-", str(s.recon.shape[0])
        rows.append([s.name, trials, neurons, conds, _pct(p.r2_readin), _pct(p.r2_pcs)])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        say("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    if result.mode == _pcr.CONDITION:
        pad = f"; {k - result.rank} zero components padded" if k > result.rank else ""
        say(f"shared PCs: the {k} components explain {_pct(result.explained)} of the variance of "
            f"the stacked condition averages (rank {result.rank}{pad})")
    elif k > result.rank:
        say(f"note: a session's data have rank {result.rank} < {k}; its extra components are zero")
