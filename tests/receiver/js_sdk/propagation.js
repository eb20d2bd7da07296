// A Node.js service that carries context with OpenTelemetry JS's own propagators, named in
// PROPAGATORS as OTEL_PROPAGATORS names them (tracecontext, baggage, b3, b3multi, xray).
//   GET /start?sampled=1|0  starts a trace (sampled or not; or continues the one of the
//                           request's own trace headers), puts baggage on it, calls
//                           PEER/price (a tracekit Python service) from a CLIENT span, and
//                           answers what it sent and what the peer answered, as JSON
//   GET /stock              answers, as JSON, the context it extracted from the request and
//                           the trace headers it would send on from there (B3's debug flag)
// Env: PEER, PORT, PROPAGATORS. Prints "listening PORT"; exits on SIGTERM. Exports nothing:
// the ids on the wire are what the test checks.
'use strict';
const http = require('http');
const api = require('@opentelemetry/api');
const {
  CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator,
} = require('@opentelemetry/core');
const { B3InjectEncoding, B3Propagator } = require('@opentelemetry/propagator-b3');
const { AWSXRayPropagator } = require('@opentelemetry/propagator-aws-xray');
const {
  AlwaysOffSampler, AlwaysOnSampler, BasicTracerProvider, ParentBasedSampler,
} = require('@opentelemetry/sdk-trace-base');

const MADE = {
  tracecontext: () => new W3CTraceContextPropagator(),
  baggage: () => new W3CBaggagePropagator(),
  b3: () => new B3Propagator({ injectEncoding: B3InjectEncoding.SINGLE_HEADER }),
  b3multi: () => new B3Propagator({ injectEncoding: B3InjectEncoding.MULTI_HEADER }),
  xray: () => new AWSXRayPropagator(),
};
const propagator = new CompositePropagator({
  propagators: process.env.PROPAGATORS.split(',').map((name) => MADE[name]()),
});

// A new trace is sampled when the request asks for it (the span's 'sampled' attribute).
const byRequest = {
  shouldSample: (context, traceId, name, kind, attributes) => (
    attributes.sampled ? new AlwaysOnSampler() : new AlwaysOffSampler()
  ).shouldSample(),
  toString: () => 'ByRequest',
};
const tracer = new BasicTracerProvider({
  sampler: new ParentBasedSampler({ root: byRequest }),
}).getTracer('propagation-test');

function get(url, headers) {
  return new Promise((resolve, reject) => {
    http.get(url, { headers }, (response) => {
      let body = '';
      response.on('data', (chunk) => { body += chunk; });
      response.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

function entries(context) {
  const bag = api.propagation.getBaggage(context);
  return bag ? Object.fromEntries(bag.getAllEntries().map(([key, e]) => [key, e.value])) : {};
}

async function start(request, sampled) {
  const caller = propagator.extract(api.ROOT_CONTEXT, request.headers, api.defaultTextMapGetter);
  const root = tracer.startSpan('checkout', { kind: api.SpanKind.SERVER, attributes: { sampled } }, caller);
  let context = api.trace.setSpan(caller, root);
  context = api.propagation.setBaggage(context, api.propagation.createBaggage({
    'correlation.id': { value: 'order-42' },
    'user name': { value: 'Amélie Dupont' },
    plan: { value: 'a+b=c; 100%' },
  }));
  const client = tracer.startSpan('GET /price', { kind: api.SpanKind.CLIENT }, context);
  const headers = {};
  propagator.inject(api.trace.setSpan(context, client), headers, api.defaultTextMapSetter);
  const peer = JSON.parse(await get(`${process.env.PEER}/price`, headers));
  client.end();
  root.end();
  return { trace_id: root.spanContext().traceId, client: client.spanContext().spanId, sent: headers, peer };
}

function stock(request) {
  const context = propagator.extract(api.ROOT_CONTEXT, request.headers, api.defaultTextMapGetter);
  const parent = api.trace.getSpanContext(context);
  const onward = {};
  propagator.inject(context, onward, api.defaultTextMapSetter);
  return {
    trace_id: parent ? parent.traceId : null,
    parent: parent ? parent.spanId : null,
    sampled: parent ? (parent.traceFlags & api.TraceFlags.SAMPLED) === api.TraceFlags.SAMPLED : null,
    baggage: entries(context),
    correlation_id: request.headers['x-correlation-id'] || null,
    onward,
  };
}

const server = http.createServer(async (request, response) => {
  const url = new URL(request.url, 'http://localhost');
  try {
    let body;
    if (url.pathname === '/start') body = await start(request, url.searchParams.get('sampled') === '1');
    else if (url.pathname === '/stock') body = stock(request);
    else { response.writeHead(404); response.end(); return; }
    response.writeHead(200, { 'Content-Type': 'application/json' });
    response.end(JSON.stringify(body));
  } catch (error) {
    response.writeHead(500, { 'Content-Type': 'text/plain' });
    response.end(String(error));
  }
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
server.listen(Number(process.env.PORT), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
