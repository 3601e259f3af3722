"""gcbulk's memory: the SQLite ledger, its migrations and the state machine of every persisted object."""
