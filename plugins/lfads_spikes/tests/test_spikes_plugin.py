"""lfads-spikes is found by the core through its entry point, not by import."""

import numpy as np
import torch

from lfads_core import registry


def test_poisson_is_registered_by_lfads_spikes():
    entry = registry.lookup("reconstruction", "poisson")
    assert entry.dist == "lfads-spikes"
    cls = registry.load("reconstruction", "poisson")
    assert cls.__module__ == "lfads_spikes.poisson"


def test_poisson_from_registry_reconstructs_counts():
    cls = registry.load("reconstruction", "poisson")
    recon = cls(cls.Config(), n_channels=3)
    counts = torch.tensor([[[0.0, 1.0, 4.0]]])
    params = torch.log(torch.tensor([[[0.5, 1.0, 4.0]]])).unsqueeze(-1)
    expected = -torch.distributions.Poisson(torch.tensor([0.5, 1.0, 4.0])).log_prob(counts)
    assert torch.allclose(recon.nll(params, counts), expected, atol=1e-6)
    assert recon.check_data(np.array([0.0, 2.0])) is None
    assert "negative" in recon.check_data(np.array([-1.0]))
