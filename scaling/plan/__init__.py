"""``scaling plan``: what a config builds (parameters per component, FLOPs per image, the module tree),
counted on the meta device so even billions of parameters cost no memory."""
