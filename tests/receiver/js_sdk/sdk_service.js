// A Node.js service as its users set one up: @opentelemetry/sdk-node with the HTTP
// instrumentation, configured by the standard variables alone (OTEL_SERVICE_NAME,
// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_PROPAGATORS, OTEL_LOGS_EXPORTER, OTEL_METRICS_EXPORTER...).
//   GET /reserve/ID  logs "reserving ID", calls PEER/price/ID and answers what it answered
//                    (502 when it failed)
// Env: PEER, PORT. Prints "listening PORT"; SIGTERM flushes every signal and exits.
'use strict';
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { logs, SeverityNumber } = require('@opentelemetry/api-logs');

const sdk = new NodeSDK({ instrumentations: [new HttpInstrumentation()] });
sdk.start();

const http = require('http');
const get = require('./get');
const log = logs.getLogger('inventory');

const server = http.createServer(async (request, response) => {
  const reserve = request.url.match(/^\/reserve\/([\w-]+)$/);
  if (!reserve) {
    response.writeHead(404);
    response.end();
    return;
  }
  log.emit({ severityNumber: SeverityNumber.INFO, severityText: 'INFO', body: `reserving ${reserve[1]}` });
  try {
    const price = await get(`${process.env.PEER}/price/${reserve[1]}`);
    response.writeHead(price.status === 200 ? 200 : 502, { 'Content-Type': 'text/plain' });
    response.end(price.body);
  } catch (error) {
    response.writeHead(502, { 'Content-Type': 'text/plain' });
    response.end(String(error));
  }
});

server.listen(Number(process.env.PORT), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});

process.on('SIGTERM', () => {
  server.close();
  sdk.shutdown().then(() => process.exit(0), () => process.exit(1));
});
