// Spans made by the official OpenTelemetry JS SDK, sent by its OTLP/HTTP or gRPC exporters.
// Usage: node export_spans.js ENDPOINT proto|json|grpc gzip|none COUNT [empty-link|at-once|not-a-number|huge-integer]
// (grpc: ENDPOINT is the receiver's gRPC address, http://host:port)
// empty-link: each parent span links to the invalid (all-zero) span context, with an attribute.
// at-once: every batch of 200 is exported at once (the exporter's limit raised to allow it),
// and each child span carries 500 characters of SQL, so that receiving a batch takes a while.
// not-a-number: each parent span has a ratio of 0 / 0 and a rate of 1 / 0 (NaN and Infinity).
// huge-integer: each parent span has integral numbers past 64 bits, 1e21 and 2 ** 64.
// Prints one JSON line: spans acknowledged and refused by the receiver, and their trace ids.
'use strict';
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { ExportResultCode } = require('@opentelemetry/core');
const { context, trace, INVALID_SPAN_CONTEXT } = require('@opentelemetry/api');

const [endpoint, encoding, compression, countText, option] = process.argv.slice(2);
const MODULES = { proto: 'proto', json: 'http', grpc: 'grpc' };
const { OTLPTraceExporter } = require(`@opentelemetry/exporter-trace-otlp-${MODULES[encoding]}`);

async function main() {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': `node-${encoding}-${compression}` }),
    spanProcessors: [new SimpleSpanProcessor(memory)],
  });
  const tracer = provider.getTracer('tracekit-js-sdk-test', '1.0.0');
  for (let i = 0; i < Number(countText) / 2; i++) {
    const links = option === 'empty-link' ? [{ context: INVALID_SPAN_CONTEXT, attributes: { reason: 'no upstream context' } }] : [];
    const ratios = option === 'not-a-number' ? { 'cache.hit_ratio': 0 / 0, rate: 1 / 0 }
      : option === 'huge-integer' ? { 'bytes.total': 1e21, count: 2 ** 64 } : {};
    const parent = tracer.startSpan('GET /items/{id}', { kind: 1, attributes: { 'http.request.method': 'GET', n: i, ...ratios }, links });
    const inside = trace.setSpan(context.active(), parent);
    const query = option === 'at-once' ? { 'db.query.text': `SELECT * FROM items WHERE id = ${i} ${' '.repeat(500)}` } : {};
    tracer.startSpan('SELECT items', { attributes: { 'db.system.name': 'postgresql', ...query } }, inside).end();
    parent.end();
  }
  const spans = memory.getFinishedSpans();
  const url = encoding === 'grpc' ? endpoint : `${endpoint}/v1/traces`;
  const concurrencyLimit = option === 'at-once' ? Math.ceil(spans.length / 200) : undefined;
  const exporter = new OTLPTraceExporter({ url, compression, concurrencyLimit });
  let acknowledged = 0;
  let refused = 0;
  const errors = new Set();
  const send = async (batch) => {
    const result = await new Promise((resolve) => exporter.export(batch, resolve));
    if (result.code === ExportResultCode.SUCCESS) acknowledged += batch.length;
    else { refused += batch.length; errors.add(String(result.error)); }
  };
  const batches = [];
  for (let start = 0; start < spans.length; start += 200) batches.push(spans.slice(start, start + 200));
  if (option === 'at-once') await Promise.all(batches.map(send));
  else for (const batch of batches) await send(batch);
  await exporter.shutdown();
  const traceIds = [...new Set(spans.map((s) => s.spanContext().traceId))];
  process.stdout.write(JSON.stringify({ acknowledged, refused, errors: [...errors], traceIds }) + '\n');
}

main().catch((error) => { console.error(String(error)); process.exit(1); });
