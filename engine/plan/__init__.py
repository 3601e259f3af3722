"""The planner, pure: a case tree and a job file become planned cases and preflight findings,
with no network and no database (the CLI records the plan in the ledger)."""
