"""Lambda entry points: thin adapters from an event to one domain call."""
