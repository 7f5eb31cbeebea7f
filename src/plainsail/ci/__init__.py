"""Continuous delivery set-up: `plainsail init` writes plainsail.yml and a GitHub Actions
workflow that follows the deploy rules `plainsail audit` checks."""
