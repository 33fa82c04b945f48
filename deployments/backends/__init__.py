"""Backends per role, registered by name so a profile's load chain can name them.

Each module imports its heavy library inside the loader, so registering costs nothing.
"""
