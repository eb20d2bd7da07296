// One request's span and its log records, and a metric, sent by the official OpenTelemetry JS
// SDK's OTLP exporters as a Node.js service would: traces and logs over http/json, http/proto
// or grpc, gzip or not.
// Usage: node export_signals.js HTTP_ENDPOINT GRPC_ENDPOINT json|proto|grpc gzip|none
// Prints one JSON line: each signal's export result code (0 success), the trace and span ids.
'use strict';
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { LoggerProvider, InMemoryLogRecordExporter, SimpleLogRecordProcessor } = require('@opentelemetry/sdk-logs');
const { MeterProvider, PeriodicExportingMetricReader, InMemoryMetricExporter, AggregationTemporality } = require('@opentelemetry/sdk-metrics');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { context, trace } = require('@opentelemetry/api');
const { SeverityNumber } = require('@opentelemetry/api-logs');

const [httpEndpoint, grpcEndpoint, transport, compression] = process.argv.slice(2);
const SUFFIX = { json: 'http', proto: 'proto', grpc: 'grpc' }[transport];

function exporter(kind, signal) {
  const { [kind]: Exporter } = require(`@opentelemetry/exporter-${signal}-otlp-${SUFFIX}`);
  const url = transport === 'grpc' ? grpcEndpoint : `${httpEndpoint}/v1/${signal === 'trace' ? 'traces' : signal}`;
  return new Exporter({ url, compression });
}

function send(exporter_, items) {
  return new Promise((resolve) => exporter_.export(items, (result) => resolve(result)));
}

async function main() {
  const resource = resourceFromAttributes({ 'service.name': `node-${transport}-${compression}` });
  const spans = new InMemorySpanExporter();
  const tracer = new BasicTracerProvider({ resource, spanProcessors: [new SimpleSpanProcessor(spans)] }).getTracer('t');
  const logs = new InMemoryLogRecordExporter();
  const logger = new LoggerProvider({ resource, processors: [new SimpleLogRecordProcessor(logs)] }).getLogger('l');
  const span = tracer.startSpan('GET /orders/{id}', { kind: 1, attributes: { 'http.request.method': 'GET' } });
  const inside = trace.setSpan(context.active(), span); // no context manager: passed explicitly
  logger.emit({ context: inside, severityNumber: SeverityNumber.INFO, severityText: 'INFO', body: 'order loaded', attributes: { 'order.id': 42 } });
  logger.emit({ context: inside, severityNumber: SeverityNumber.ERROR, severityText: 'ERROR', body: 'payment declined' });
  span.end();
  const result = { traceId: span.spanContext().traceId, spanId: span.spanContext().spanId };
  const traceExporter = exporter('OTLPTraceExporter', 'trace');
  result.traces = (await send(traceExporter, spans.getFinishedSpans())).code;
  await traceExporter.shutdown();
  const logExporter = exporter('OTLPLogExporter', 'logs');
  result.logs = (await send(logExporter, logs.getFinishedLogRecords())).code;
  await logExporter.shutdown();
  {
    const memory = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter: memory, exportIntervalMillis: 60000 });
    const meter = new MeterProvider({ resource, readers: [reader] }).getMeter('m');
    meter.createCounter('orders').add(3, { route: '/orders/{id}' });
    meter.createHistogram('latency').record(12.5);
    await reader.forceFlush();
    const metricExporter = exporter('OTLPMetricExporter', 'metrics');
    const [metrics] = memory.getMetrics();
    const answer = await send(metricExporter, metrics);
    result.metrics = answer.code;
    if (answer.error) result.metricsError = String(answer.error);
    await metricExporter.shutdown();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((error) => { console.error(String(error)); process.exit(1); });
