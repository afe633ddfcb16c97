#!/usr/bin/env node
// The S3 endpoint of the system tests: s3rver (pinned in package.json) over TLS, started by
// tests/harness.py S3Server. Differences from `s3rver` on the command line, and why:
// - The key pair comes on stdin (first line: {"accessKeyId": .., "secretAccessKey": ..}), never
//   argv or the environment, and replaces s3rver's well-known S3RVER/S3RVER pair.
// - s3rver 3.7 only looks up the access key of a SigV4 request and never checks the signature
//   ("Signature version 4 calculation is unimplemented"). The middleware below checks it, the
//   credential scope's region and service, and refuses anonymous requests, as S3 does for a
//   private bucket: a client with a wrong secret or region fails here as it would against S3.
// - stdout carries one JSON line, {"port": N}, once the buckets exist and the socket listens
//   (port 0 = any free port, no race); the request log goes to stderr.
// - The process exits when its stdin closes, so it dies with the harness that started it.
//
// Usage: NODE_PATH=<s3rver's node_modules> node serve.js --directory D --cert C --key K
//        --region R [--address A] [--port N] --bucket B... <credentials-then-keep-open
// (--address: 127.0.0.1 by default; the lab of real hosts gives its bridge's address.)
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');
const S3Error = require('s3rver/lib/models/error');

function parseArgs(argv) {
  const opts = { address: '127.0.0.1', port: 0, buckets: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    switch (name) {
      case '--directory': opts.directory = value; break;
      case '--cert': opts.cert = value; break;
      case '--key': opts.key = value; break;
      case '--region': opts.region = value; break;
      case '--address': opts.address = value; break;
      case '--port': opts.port = Number(value); break;
      case '--bucket': opts.buckets.push(value); break;
      default: throw new Error(`unknown argument ${name}`);
    }
  }
  for (const required of ['directory', 'cert', 'key', 'region']) {
    if (!opts[required]) throw new Error(`--${required} is required`);
  }
  return opts;
}

const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();
const sha256Hex = data => crypto.createHash('sha256').update(data).digest('hex');
const encodeRFC3986 = s =>
  encodeURIComponent(s).replace(/[!'()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase());

function canonicalQuery(search) {
  if (!search) return '';
  return search
    .split('&')
    .filter(Boolean)
    .map(pair => {
      const eq = pair.indexOf('=');
      const [k, v] = eq < 0 ? [pair, ''] : [pair.slice(0, eq), pair.slice(eq + 1)];
      const decode = s => decodeURIComponent(s.replace(/\+/g, ' '));
      return [encodeRFC3986(decode(k)), encodeRFC3986(decode(v))];
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

const AUTHORIZATION = new RegExp(
  '^AWS4-HMAC-SHA256 Credential=([^/,]+)/(\\d{8})/([^/,]+)/([^/,]+)/aws4_request, ?' +
    'SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$',
);

/** Koa middleware: AWS Signature Version 4 in the Authorization header, or 403. */
function verifySigV4({ accessKeyId, secretAccessKey, region }) {
  return async function sigv4(ctx, next) {
    const header = ctx.get('authorization');
    const m = AUTHORIZATION.exec(header);
    if (!m) throw new S3Error('AccessDenied', 'Access Denied: a SigV4 Authorization header is required');
    const [, keyId, date, scopeRegion, service, signedHeaders, signature] = m;
    if (keyId !== accessKeyId) {
      // As S3 answers it: the key it does not know is quoted back.
      throw new S3Error('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.',
        { AWSAccessKeyId: keyId });
    }
    if (scopeRegion !== region || service !== 's3') {
      throw new S3Error('AuthorizationHeaderMalformed',
        `The authorization header is malformed; the region '${scopeRegion}' is wrong; expecting '${region}'`);
    }
    const amzDate = ctx.get('x-amz-date');
    const [rawPath, search = ''] = ctx.req.url.split(/\?(.*)/s);
    const canonicalRequest = [
      ctx.method,
      rawPath,
      canonicalQuery(search),
      ...signedHeaders.split(';').map(h => `${h}:${String(ctx.get(h)).trim().replace(/\s+/g, ' ')}`),
      '',
      signedHeaders,
      ctx.get('x-amz-content-sha256') || 'UNSIGNED-PAYLOAD',
    ].join('\n');
    const scope = `${date}/${scopeRegion}/${service}/aws4_request`;
    const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
    let key = hmac('AWS4' + secretAccessKey, date);
    for (const part of [scopeRegion, service, 'aws4_request']) key = hmac(key, part);
    const expected = hmac(key, stringToSign);
    if (!crypto.timingSafeEqual(expected, Buffer.from(signature, 'hex'))) {
      // S3 names the access key in this error too: clients print it, so modules must treat it with care.
      throw new S3Error('SignatureDoesNotMatch',
        'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
        { AWSAccessKeyId: keyId });
    }
    return next();
  };
}

/** Koa middleware: one stderr line per request: method, path, the names of the query parameters
 * (not their values) and the status. No headers: they carry the credential. */
function requestLog() {
  return async function log(ctx, next) {
    const start = Date.now();
    let status;
    try {
      await next();
      status = ctx.status;
    } catch (err) {
      // Koa's error handler, upstream of this, sets the status from the error afterwards.
      status = `${err.status || 500} ${err.code || ''}`;
      throw err;
    } finally {
      const query = Object.keys(ctx.query).sort().join('&');
      const line = `${ctx.method} ${ctx.path}${query ? '?' + query : ''} ${status} ${Date.now() - start}ms`;
      process.stderr.write(`${new Date().toISOString()} ${line}\n`);
    }
  };
}

/** The first line of stdin, without ending the stream (its end later means: stop). */
function firstLine(stream) {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = chunk => {
      buffered += chunk;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      stream.off('data', onData).off('end', onEnd).pause();
      resolve(buffered.slice(0, nl));
    };
    const onEnd = () => reject(new Error('stdin closed before the credentials line'));
    stream.setEncoding('utf8');
    stream.on('data', onData).on('end', onEnd);
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const line = await firstLine(process.stdin);
  let credentials;
  try {
    credentials = JSON.parse(line);
  } catch (err) {
    // Not err.message: JSON.parse quotes the input, which holds the secret.
    throw new Error('the credentials line is not JSON');
  }
  const { accessKeyId, secretAccessKey } = credentials;
  if (!accessKeyId || !secretAccessKey) throw new Error('the credentials line lacks accessKeyId or secretAccessKey');

  AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(accessKeyId, secretAccessKey);

  const server = new S3rver({
    address: opts.address,
    port: opts.port,
    directory: opts.directory,
    cert: fs.readFileSync(opts.cert),
    key: fs.readFileSync(opts.key),
    silent: true,
    vhostBuckets: false,
    configureBuckets: opts.buckets.map(name => ({ name, configs: [] })),
  });
  // s3rver's own middleware (logger, XML, vhost, router with its auth) was added by the
  // constructor; ours must run first. Koa composes app.middleware when the server starts.
  server.middleware.unshift(requestLog(), verifySigV4({ accessKeyId, secretAccessKey, region: opts.region }));
  server.on('error', err => {
    if (!(err instanceof S3Error)) process.stderr.write(`${err.stack || err}\n`);
  });

  const { port } = await server.run();
  process.stdout.write(JSON.stringify({ port }) + '\n');

  // Nothing needs flushing: exit at once, even with a client's connection still open.
  const stop = () => process.exit(0);
  process.stdin.on('end', stop).on('error', stop).resume();
  process.on('SIGTERM', stop).on('SIGINT', stop);
}

main().catch(err => {
  process.stderr.write(`serve.js: ${err.message}\n`);
  process.exit(1);
});
