"""Stage I model: the 3D-VQGAN with spatial-temporal codebooks, its losses and trainer."""
