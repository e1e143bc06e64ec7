"""A real S3 server (SeaweedFS) for the test session. Filled in by the S3 test work."""
