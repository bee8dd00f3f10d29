"""esc_haagent: observe -> decide -> act, once per cycle; owns the node's role."""
