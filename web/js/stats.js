// What the watch page shows from RTCPeerConnection.getStats(): the media path (direct or via
// the TURN relay, from the selected candidate pair), bitrate, frame rate, round-trip time, and
// from these the connection quality in a word (Good / Fair / Poor).

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
    packetsReceived: null,
    lossPercent: null, // of the packets since the previous summary
    quality: null, // "good" | "fair" | "poor" | null (no video yet)
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
    out.packetsReceived = stat.packetsReceived ?? null;
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
    if (out.packetsReceived !== null && previous.packetsReceived !== null) {
      const received = out.packetsReceived - previous.packetsReceived;
      const lost = Math.max(0, (out.packetsLost ?? 0) - (previous.packetsLost ?? 0));
      if (received + lost > 0) out.lossPercent = Math.round((1000 * lost) / (received + lost)) / 10;
    }
  }
  out.quality = quality(out);
  return out;
}

/**
 * Good / Fair / Poor from what the viewer feels: lost packets (smearing, freezes), round trip
 * (delay), frame rate (jerkiness).  Null until pictures arrive.
 */
export function quality({ framesDecoded, fps, rttMs, lossPercent }) {
  if (!framesDecoded) return null;
  const loss = lossPercent ?? 0;
  if (loss > 5 || (rttMs !== null && rttMs > 400) || (fps !== null && fps < 5)) return "poor";
  if (loss > 1 || (rttMs !== null && rttMs > 150) || (fps !== null && fps < 12)) return "fair";
  return "good";
}
