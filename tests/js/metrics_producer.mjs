// The official JavaScript client's IdempotentProducer writing points to
// StreamDB's `metrics` stream over a network that loses answers.
//
//   node metrics_producer.mjs BASE_URL METRIC POINTS IN_FLIGHT
//
// Writes POINTS points of metric METRIC as producer `js-METRIC`, with up to
// IN_FLIGHT batches in flight (more than one: requests can arrive out of
// order, and the client waits out the server's 409 gaps and resends).
//
// Every third producer POST reaches the server but its answer is lost; the
// same request is sent again, as a retrying proxy or HTTP layer would, and
// the client sees the second answer. The server must take each batch once.
// Batches are cut by size only (a long linger, all appends before the
// first await), so a second run sends the very same batches with the same
// sequence numbers. Prints {"posts", "resent", "statuses"} (how many of
// each status the client saw) on success; exits non-zero on any error.
import { DurableStream, IdempotentProducer } from "@durable-streams/client"

const [base, metric, count, inFlight] = process.argv.slice(2)
const points = Number(count)
const T0 = 1_705_276_800_000_000

let posts = 0
let resent = 0
const statuses = {}
async function lossy(url, init) {
  if (init?.method !== "POST") return fetch(url, init)
  let answer = await fetch(url, init)
  if (++posts % 3 === 0) {
    await answer.arrayBuffer()
    resent++
    answer = await fetch(url, init)
  }
  statuses[answer.status] = (statuses[answer.status] ?? 0) + 1
  return answer
}

const stream = new DurableStream({
  url: `${base}/v1/stream/metrics`,
  contentType: "application/json",
  fetch: lossy,
})
const errors = []
const producer = new IdempotentProducer(stream, `js-${metric}`, {
  epoch: 0,
  maxInFlight: Number(inFlight),
  lingerMs: 60_000,
  maxBatchBytes: 4096,
  fetch: lossy,
  onError: (e) => errors.push(e),
})
for (let i = 0; i < points; i++) {
  producer.append(JSON.stringify({ time: T0 + i, metric, tags: { n: String(i % 5) }, value: i }))
}
await producer.flush()
await producer.detach()
if (errors.length > 0) {
  console.error(errors.map(String).join("\n"))
  process.exit(1)
}
console.log(JSON.stringify({ posts, resent, statuses }))
