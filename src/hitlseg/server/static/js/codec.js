/* Markers on the wire: the uint8 label array (0 unmarked, c+1 for class c), zlib-compressed
 * (CompressionStream "deflate") and base64-encoded. */

function b64FromBytes(bytes) {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
  return btoa(binary);
}

function bytesFromB64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function pipeBytes(bytes, transform) {
  const stream = new Blob([bytes]).stream().pipeThrough(transform);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export async function encodeLabels(labels) {
  return b64FromBytes(await pipeBytes(labels, new CompressionStream("deflate")));
}

export async function decodeLabels(data) {
  return pipeBytes(bytesFromB64(data), new DecompressionStream("deflate"));
}

// the browser tests and the console use it (the body of a marker request, from the page)
window.encodeLabels = encodeLabels;
