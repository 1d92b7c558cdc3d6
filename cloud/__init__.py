"""The MuMu cloud: accounts, devices, pairing, WebSocket signaling and TURN credentials."""
