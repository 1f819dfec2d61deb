"""The background worker and the handlers of each job kind (kinds: ``store.jobs``)."""
