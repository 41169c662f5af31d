"""Run hooks (pluggy) found through the entry-point group ``lfads``."""

import importlib
import textwrap

import pytest

from lfads_core import hooks
from lfads_core.errors import PluginError


def fake_dist(root, dist, module, source):
    """An installed distribution on ``root``: a module and its dist-info with one `lfads` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[lfads]\n{module} = {module}\n")


@pytest.fixture
def fresh_hooks(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    hooks.clear_cache()
    yield tmp_path
    hooks.clear_cache()


def test_hook_plugin_is_called(fresh_hooks):
    fake_dist(fresh_hooks, "lfads-epoch-logger", "epoch_logger", """
        from lfads_core.hooks import hookimpl
        SEEN = []

        @hookimpl
        def lfads_epoch_end(run_dir, epoch, metrics):
            SEEN.append((run_dir, epoch, metrics["valid_recon"]))
    """)
    hooks.hook().lfads_epoch_end(run_dir="r", epoch=3, metrics={"valid_recon": 0.5})
    import epoch_logger

    assert epoch_logger.SEEN == [("r", 3, 0.5)]
    row = [r for r in hooks.listing() if r["name"] == "epoch_logger"][0]
    assert row["distribution"] == "lfads-epoch-logger" and row["status"] == "ok"


def test_broken_hook_plugin_is_listed_not_fatal(fresh_hooks):
    fake_dist(fresh_hooks, "lfads-bad-hook", "bad_hook", "raise ImportError('no such lib')\n")
    hooks.hook().lfads_run_end(run_dir="r", summary={})  # still callable
    (problem,) = [p for p in hooks.load_errors() if "lfads-bad-hook" in p]
    assert "bad_hook" in problem and "lfads-bad-hook 0.3" in problem and "no such lib" in problem


def test_misspelt_hook_is_an_error(fresh_hooks):
    fake_dist(fresh_hooks, "lfads-typo-hook", "typo_hook", """
        from lfads_core.hooks import hookimpl

        @hookimpl
        def lfads_epoch_ends(run_dir, epoch, metrics):
            pass
    """)
    with pytest.raises(PluginError, match="typo_hook"):
        hooks.hook()
    row = [r for r in hooks.listing() if r["name"] == "typo_hook"][0]  # still listed
    assert row["status"].startswith("error") and "lfads_epoch_ends" in row["status"]
