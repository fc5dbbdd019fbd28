"""Small denoiser definitions used by tests, benchmarks and the demo."""
