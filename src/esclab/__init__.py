"""The lab: hosts in network namespaces running the real pair on one machine."""
