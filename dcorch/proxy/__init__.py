"""The API proxies: identity (keystone), platform (sysinv) and usm, in front of the master.

Each proxy forwards every request to its master service and, for the few write routes that must
reach the subclouds, submits work orders before answering (docs/behaviour.md#proxy-pipeline).
"""
