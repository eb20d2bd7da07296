// GET a URL with Node's http module; resolves { status, body }. Required after the SDK has
// started, so that its HTTP instrumentation traces the call and carries the context.
'use strict';
const http = require('http');

module.exports = function get(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (response) => {
      let body = '';
      response.on('data', (chunk) => { body += chunk; });
      response.on('end', () => resolve({ status: response.statusCode, body }));
    }).on('error', reject);
  });
};
