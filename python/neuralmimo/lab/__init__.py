"""The lab: the ``neuralmimo`` command line (:mod:`.cli`), run folders and the step protocol
(:mod:`.runs`), figures (:mod:`.figures`), the error-rate sweep (:mod:`.sim`), benchmarks
(:mod:`.bench`) and one pipeline per paper (:mod:`.learngene`, :mod:`.deepsic`). The only package
that imports yaml, matplotlib or tqdm at module level; Sionna only lazily."""
