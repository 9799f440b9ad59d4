"""The Batch API's ingress side: input file validation and the finalizer."""
