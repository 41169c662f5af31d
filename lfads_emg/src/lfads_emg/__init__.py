"""lfads-emg: EMG components for lfads.

- reconstruction ``gamma``: rectified, filtered EMG as gamma-distributed per bin (:mod:`.gamma`);
- augmentation ``temporal_shift``: each channel of each trial shifted by a few bins (:mod:`.temporal_shift`);
- ``lfads-run synth emg``: synthetic multi-muscle EMG with ground truth (:mod:`.synth`).
"""

__version__ = "0.1.0"
