"""gcbulk: resumable bulk transfers of medical-imaging datasets into and out of Grand Challenge reader studies.

The command line (``gcbulk``) is a thin layer over this package. ``gcbulk.engine`` does the work (planner, Grand
Challenge client, upload path, results side, long-lived service, CLI), ``gcbulk.state`` remembers it (the ledger and
its state machines) and ``gcbulk.emulator`` is the Grand Challenge stand-in used by the demo and the tests.
"""
