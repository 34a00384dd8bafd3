"""Ray pipelines and the `stc` command line. Modules here import heavy dependencies
(torch, diffusers) inside functions, so `stc --help` stays fast."""
