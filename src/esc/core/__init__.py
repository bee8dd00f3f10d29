"""The pure core: every decision the agent makes, as data and pure functions (stdlib only).

- table.py: the state machine (every allowed edge).
- facts.py: the configuration of a decision, the cycle's context, the facts rules test.
- learn.py: folding an observation into memory.
- veto.py: why a node must not hold the VIP (codes, and their sentences).
- rule.py, rules.py, serving.py: the rules, one set per storage mode, with ids.
- decide.py: ``decide()``; requests.py: admitting an operator's switchover.
- diagram.py: the table and the rules as the diagram in docs/architecture.md.
"""
