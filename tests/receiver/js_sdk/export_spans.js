// Spans made by the official OpenTelemetry JS SDK, sent by its OTLP/HTTP exporters.
// Usage: node export_spans.js ENDPOINT proto|json gzip|none COUNT [empty-link]
// empty-link: each parent span links to the invalid (all-zero) span context, with an attribute.
// Prints one JSON line: spans acknowledged and refused by the receiver, and their trace ids.
'use strict';
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { ExportResultCode } = require('@opentelemetry/core');
const { context, trace, INVALID_SPAN_CONTEXT } = require('@opentelemetry/api');

const [endpoint, encoding, compression, countText, option] = process.argv.slice(2);
const module_ = encoding === 'proto' ? '@opentelemetry/exporter-trace-otlp-proto' : '@opentelemetry/exporter-trace-otlp-http';
const { OTLPTraceExporter } = require(module_);

async function main() {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': `node-${encoding}-${compression}` }),
    spanProcessors: [new SimpleSpanProcessor(memory)],
  });
  const tracer = provider.getTracer('tracekit-js-sdk-test', '1.0.0');
  for (let i = 0; i < Number(countText) / 2; i++) {
    const links = option === 'empty-link' ? [{ context: INVALID_SPAN_CONTEXT, attributes: { reason: 'no upstream context' } }] : [];
    const parent = tracer.startSpan('GET /items/{id}', { kind: 1, attributes: { 'http.request.method': 'GET', n: i }, links });
    const inside = trace.setSpan(context.active(), parent);
    tracer.startSpan('SELECT items', { attributes: { 'db.system.name': 'postgresql' } }, inside).end();
    parent.end();
  }
  const spans = memory.getFinishedSpans();
  const exporter = new OTLPTraceExporter({ url: `${endpoint}/v1/traces`, compression });
  let acknowledged = 0;
  let refused = 0;
  for (let start = 0; start < spans.length; start += 200) {
    const batch = spans.slice(start, start + 200);
    const result = await new Promise((resolve) => exporter.export(batch, resolve));
    if (result.code === ExportResultCode.SUCCESS) acknowledged += batch.length;
    else refused += batch.length;
  }
  await exporter.shutdown();
  const traceIds = [...new Set(spans.map((s) => s.spanContext().traceId))];
  process.stdout.write(JSON.stringify({ acknowledged, refused, traceIds }) + '\n');
}

main().catch((error) => { console.error(String(error)); process.exit(1); });
