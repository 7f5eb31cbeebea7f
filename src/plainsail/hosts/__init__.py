"""Hosts: their addresses, the executor that runs argv lists on them, the state plainsail
keeps there, and the containers found there."""
