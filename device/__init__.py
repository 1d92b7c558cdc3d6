"""The MuMu Camera device: the agent that runs on the Raspberry Pi (camera, WebRTC, signaling)."""
