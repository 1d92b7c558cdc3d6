// What the watch page shows from RTCPeerConnection.getStats(): the media path (direct or via
// the TURN relay, from the selected candidate pair), bitrate, frame rate, round-trip time.

/** The selected candidate pair of a stats report (Chrome/Safari: transport; Firefox: selected). */
function selectedPair(report) {
  let pair = null;
  report.forEach((stat) => {
    if (stat.type === "transport" && stat.selectedCandidatePairId) {
      pair = report.get(stat.selectedCandidatePairId) || pair;
    }
  });
  if (pair) return pair;
  report.forEach((stat) => {
    if (stat.type === "candidate-pair" && (stat.selected || (stat.nominated && stat.state === "succeeded"))) {
      pair = pair || stat;
    }
  });
  return pair;
}

/**
 * Summarizes a stats report.  `previous` is the summary of the last call (for rates).
 * Returns {path, localType, remoteType, protocol, relayProtocol, bitrateKbps, fps, rttMs,
 *          width, height, packetsLost, framesDecoded, codec, bytesReceived, timestamp}.
 */
export function summarize(report, previous = null) {
  const out = {
    path: null, // "direct" | "relay" | null (not connected yet)
    localType: null,
    remoteType: null,
    protocol: null,
    relayProtocol: null,
    bitrateKbps: null,
    fps: null,
    rttMs: null,
    width: null,
    height: null,
    packetsLost: null,
    framesDecoded: null,
    codec: null,
    bytesReceived: null,
    timestamp: null,
  };

  const pair = selectedPair(report);
  if (pair) {
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    out.localType = local?.candidateType ?? null;
    out.remoteType = remote?.candidateType ?? null;
    out.protocol = local?.protocol ?? null;
    out.relayProtocol = local?.relayProtocol ?? null;
    if (out.localType && out.remoteType) {
      out.path = out.localType === "relay" || out.remoteType === "relay" ? "relay" : "direct";
    }
    if (typeof pair.currentRoundTripTime === "number") {
      out.rttMs = Math.round(pair.currentRoundTripTime * 1000);
    }
  }

  report.forEach((stat) => {
    if (stat.type !== "inbound-rtp" || (stat.kind ?? stat.mediaType) !== "video") return;
    out.bytesReceived = stat.bytesReceived ?? null;
    out.timestamp = stat.timestamp ?? null;
    out.framesDecoded = stat.framesDecoded ?? null;
    out.width = stat.frameWidth ?? null;
    out.height = stat.frameHeight ?? null;
    out.packetsLost = stat.packetsLost ?? null;
    if (typeof stat.framesPerSecond === "number") out.fps = Math.round(stat.framesPerSecond);
    const codec = stat.codecId ? report.get(stat.codecId) : null;
    out.codec = codec?.mimeType?.replace(/^video\//, "") ?? null;
  });

  if (previous && out.timestamp && previous.timestamp && out.timestamp > previous.timestamp) {
    const seconds = (out.timestamp - previous.timestamp) / 1000;
    if (out.bytesReceived !== null && previous.bytesReceived !== null) {
      out.bitrateKbps = Math.max(0, Math.round(((out.bytesReceived - previous.bytesReceived) * 8) / seconds / 1000));
    }
    if (out.fps === null && out.framesDecoded !== null && previous.framesDecoded !== null) {
      out.fps = Math.round((out.framesDecoded - previous.framesDecoded) / seconds);
    }
  }
  return out;
}
