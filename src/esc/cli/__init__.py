"""escadm: the operator's tool; it talks to the agent's local API and the config only."""
