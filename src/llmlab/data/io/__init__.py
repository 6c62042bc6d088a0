"""Sources (read records in batches) and sinks (write them); see sources.py and sinks.py."""
