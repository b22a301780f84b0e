"""What RQ workers execute: thin functions that load state, call the core, write results.

Routing a batch (`route`, with its per-process `context` and `privacy_stage`), emergency
tracking and escalation (`emergency/`) with its fallback channels (`channels/`), and the cold
tier (`archive/`, `lake`, `retrieval`, `disposition`, `schedule`). May import city and queues;
never workers.
"""
