"""Engram's orchestra: settings, ingestion, jobs, watcher, CLI. Imports engines/, models/, store/."""
