"""A deterministic simulation of the HA pair (issue 13): two real agents on a simulated clock.

Read docs/architecture.md, section "The simulation of the pair", for what is modelled, what is
not, and how to replay a failing schedule.
"""
