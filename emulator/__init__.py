"""A Grand Challenge stand-in: the REST API, S3 multipart uploads, the image import worker, faults and a clock."""
