"""gcbulk's engine: the planner, the Grand Challenge client, the transfer workers, the results side and the CLI."""
