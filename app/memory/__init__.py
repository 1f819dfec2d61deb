"""The memory tiers over the store: episodic (past turns, recency-weighted recall) and the
consolidation of what the person said in chat into the semantic tier during sleep."""
