"""What a person can do besides chat: playbooks, checkpoints, the source view, settings, doctor."""
