"""The only place that speaks the Grand Challenge REST API: the client, its endpoints, the server's limits,
and the one classification of errors and retries that the upload path and the results side share."""
