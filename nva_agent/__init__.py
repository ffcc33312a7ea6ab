"""The NVA agent: a small HTTP service on the NVA that brings FRR's BGP config to an intent.

It owns the agent's HTTP contract (schemas/agent.openapi.json) and its FRR adapter; it must
not know about Azure, the reconciler's drift model or the desired-state document.
"""
