"""DICOM as researchers have it: files found by content, headers read (never pixels) in parallel, grouped into
series, checked as the server would check an image set, and de-identified locally with Grand Challenge's own
procedure before anything is sent."""
