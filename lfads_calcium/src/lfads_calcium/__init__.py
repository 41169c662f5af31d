"""lfads-calcium: calcium-imaging components for lfads.

- reconstruction ``zig``: zero-inflated gamma of deconvolved event amplitudes (:mod:`.zig`);
- augmentation ``sbtt``: selective backpropagation through time over unobserved samples (:mod:`.sbtt`);
- ``lfads-run deconvolve``: dF/F traces -> event amplitudes with OASIS (:mod:`.deconvolve`);
- ``lfads-run synth calcium``: synthetic two-photon data with ground truth (:mod:`.synth`).
"""

__version__ = "0.1.0"
