"""The upload path: cases become display sets with imported values, through resumable S3 multipart
uploads, within the client's and the server's limits, every step recorded in the ledger."""
