"""Adapters to the MTAs: the milter and its daemon, and the Postfix and Sendmail hold queues the quarantine acts on."""
