'use strict'
// The Fastify peer in the load harness (benches/load/run.sh): Fastify 5 with @fastify/etag,
// serving the same bodies as examples/bench_server.rs: GET /bytes/:n answers n bytes, byte i
// = i % 251, from a per-size cache, so the handler costs the same for every request.
//
//   node benches/fastify/server.js --addr 127.0.0.1:0 --hash default|sha256|sha1|fnv1a
//
// --hash default: the plugin's own default (the `algorithm` option unset: sha1 in 6.x);
// sha256 / sha1: the `algorithm` option (node:crypto); fnv1a: `hashFn: Etag.fnv1a`.
// The first line printed is `listening on http://IP:PORT (...)`, as from our servers.

const Fastify = require('fastify')
const Etag = require('@fastify/etag')

function parseArgs (argv) {
  const opts = { addr: '127.0.0.1:0', hash: 'default' }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--addr' || arg === '--hash') {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`)
      opts[arg.slice(2)] = argv[++i]
    } else {
      throw new Error(`unknown argument ${arg}`)
    }
  }
  return opts
}

function etagOptions (hash) {
  switch (hash) {
    case 'default': return {}
    case 'fnv1a': return { hashFn: Etag.fnv1a }
    case 'sha1':
    case 'sha256': return { algorithm: hash }
    default: throw new Error(`unknown --hash ${hash} (default, sha256, sha1, fnv1a)`)
  }
}

const MAX_SIZE = 16 * 1024 * 1024
const cache = new Map()
function payload (n) {
  let body = cache.get(n)
  if (body === undefined) {
    body = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) body[i] = i % 251
    cache.set(n, body)
  }
  return body
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  const sep = opts.addr.lastIndexOf(':')
  const host = opts.addr.slice(0, sep)
  const port = Number(opts.addr.slice(sep + 1))

  const app = Fastify({ logger: false })
  await app.register(Etag, etagOptions(opts.hash))
  app.get('/bytes/:n', async (req, reply) => {
    const n = Number.parseInt(req.params.n, 10)
    if (!(n >= 0 && n <= MAX_SIZE)) {
      reply.code(404)
      return ''
    }
    reply.type('application/octet-stream')
    return payload(n)
  })

  await app.listen({ host, port })
  const { address, port: bound } = app.server.address()
  const etagVersion = require('@fastify/etag/package.json').version
  console.log(`listening on http://${address}:${bound} (fastify ${app.version}, @fastify/etag ${etagVersion}, hash ${opts.hash})`)

  const stop = () => { app.close().then(() => process.exit(0), () => process.exit(1)) }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
