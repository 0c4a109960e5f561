"""Tools built from the blocks, outside the blocks themselves: running a ``.grc`` file headless
(``harness``), the loopback demos and the SigMF replay (``loopback``), benchmarks and soaks
(``stress``), fault injection for tests and the fault soak (``faults``) and the site-adaptation
demo (``adapt_demo``). The ``neuralmimo`` command line starts them; they are the only modules of
the block package that may import the lab."""
