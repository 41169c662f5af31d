"""AutoLFADS: population-based training of LFADS hyperparameters (Keshtkaran et al. 2022).

:mod:`.explore` holds the pure logic (search-space sampling, binary tournament, multiplicative
explore, stopping rule), usable without Ray; :mod:`.members` the members (a Trainer each, built
without files); :mod:`.controller` the generation loop over a runner of members; :mod:`.ray_runner`
the thin Ray glue; :mod:`.run` the run directory (pbt.csv, resume, the best member's outputs).
"""
