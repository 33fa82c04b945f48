"""Request logic per feature: validate against limits, call models through ModelClients, shape answers."""
