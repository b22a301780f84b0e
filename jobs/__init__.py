"""What RQ workers execute: thin functions that load state, call the core, write results."""
