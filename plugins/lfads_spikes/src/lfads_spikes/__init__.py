"""lfads-spikes: spike-count components for lfads (the Poisson reconstruction)."""

__version__ = "0.1.0"
