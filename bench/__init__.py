"""Benchmarks for tofu: load tests, a comparison with thumbor / nginx image_filter / a ceiling,
a memory soak and a format-savings report. See bench/README.md."""
