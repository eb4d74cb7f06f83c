"""The demo and its support, apart from the library: the command line
(``snntorch-localzo``), the training loop it runs, the networks shared by the
demo, the benchmarks and the tutorials, small datasets that need no download,
plots, and the timing of a training step. Nothing in the library imports from
here."""
