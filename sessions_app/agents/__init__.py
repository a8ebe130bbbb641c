"""Agents: named, configured model workers that act in a session beside its users, each with
its own clientId (`agent:<name>`), turns and answers (docs/agents.md)."""
