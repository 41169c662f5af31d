"""lfads-spikes: spike-count components for lfads.

- reconstruction ``poisson`` (:mod:`lfads_spikes.poisson`),
- reconstruction ``negative_binomial`` (:mod:`lfads_spikes.negative_binomial`), for
  over-dispersed counts,
- augmentation ``spike_jitter`` (:mod:`lfads_spikes.spike_jitter`),
- ``lfads-run synth lorenz_overdispersed`` (:mod:`lfads_spikes.hooks`).
"""

__version__ = "0.1.0"
