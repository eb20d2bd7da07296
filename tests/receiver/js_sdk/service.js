// A Node.js service instrumented with the official OpenTelemetry JS SDK and its HTTP
// instrumentation, exporting OTLP/protobuf (chunked, gzip) to COLLECTOR.
//   GET /checkout  calls PEER/price (a tracekit Python service), then answers
//   GET /stock     answers (the Python service calls it back)
// Env: COLLECTOR, PEER, PORT. Prints "listening PORT"; SIGTERM flushes spans and exits.
'use strict';
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');

const exporter = new OTLPTraceExporter({ url: `${process.env.COLLECTOR}/v1/traces`, compression: 'gzip' });
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'storefront-node' }),
  spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 200 })],
});
provider.register();
registerInstrumentations({ instrumentations: [new HttpInstrumentation()] });

const http = require('http');
const get = require('./get');

const server = http.createServer(async (request, response) => {
  if (request.url.startsWith('/checkout')) {
    const price = await get(`${process.env.PEER}/price`);
    response.writeHead(price.status === 200 ? 200 : 502, { 'Content-Type': 'text/plain' });
    response.end(`price ${price.body}\n`);
  } else if (request.url.startsWith('/stock')) {
    response.writeHead(200, { 'Content-Type': 'text/plain' });
    response.end('7');
  } else {
    response.writeHead(404);
    response.end();
  }
});

server.listen(Number(process.env.PORT), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});

process.on('SIGTERM', () => {
  server.close();
  provider.shutdown().then(() => process.exit(0), () => process.exit(1));
});
