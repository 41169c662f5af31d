"""lfads-multisession: stitched LFADS models over several recording sessions.

- readin ``multisession`` (:class:`lfads_multisession.components.MultisessionReadin`): one
  linear map per session from its channels to a shared size ``dim``;
- readout ``multisession`` (:class:`lfads_multisession.components.MultisessionReadout`): one
  linear map per session from the shared factors to its reconstruction's parameters;
- both start from principal-component regression (PCR) of the training data by default
  (:mod:`lfads_multisession.pcr`, pure numpy);
- ``lfads-run pcr SPEC`` (:mod:`lfads_multisession.hooks`): what PCR finds for a spec's sessions.
"""

__version__ = "0.1.0"
