"""Devices: profiles (the latency and power model of an LLM on a device, with provenance) and the
service models that turn a request's shape into its service time and energy."""
