//! Relocatable archives of installed prefixes (conda-pack's contract).
