"""Local stand-ins for cloud services that the demo and the tests start and stop themselves.

Owns process management for those servers. Must not know anything about reconciling.
"""
