"""The Redis side: streams, priority queues, inboxes, the hot tier."""
