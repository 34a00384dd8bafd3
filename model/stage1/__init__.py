"""Stage I: the 3D-VQGAN with spatial and temporal codebooks, MPR, the DINOv2 discriminator,
its losses, clip data and trainer."""
