"""Training losses: reconstruction, perceptual (LPIPS), adversarial (PatchGAN, hinge)."""
