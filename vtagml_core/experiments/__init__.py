"""The paper's questions as experiments, on top of the trainer (``docs/settings.md``).

- :mod:`.runs` -- trained runs keyed by what determines their numbers; train or reuse;
- :mod:`.evaluate` -- a model over a whole split, a run on any split of any domain;
- :mod:`.seeds` -- per-seed values into table cells;
- :mod:`.settings` -- the evaluation settings of Tables 2-6;
- :mod:`.compare` -- every method in one table; :mod:`.tables` -- the paper's tables;
  :mod:`.paper_numbers` -- the paper's own numbers beside them.
"""
