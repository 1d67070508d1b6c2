"""Image metrics shared by training, evaluation and the probe: PSNR, SSIM, FID statistics, image grids."""
