"""Physics and instrument models shared by the reduction and the simulator: PSF evaluation,
resolution matrices, stellar models, photometry, arc-line lists."""
