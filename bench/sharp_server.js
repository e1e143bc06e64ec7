// sharp (libvips for Node) behind the thinnest Node `http` server: the comparison's sharp row.
//
//   GET /W/H/CROP/Q/KEY  ->  ROOT/KEY resized into W x H (0: an open side), CROP 1 a centre
//                            crop covering the box, else fit inside; JPEG at quality Q.
//
// The same path as bench/ceiling.py (bench/targets.py builds both). One process per core
// (node:cluster), sharp.concurrency(1) as tofu's default vips_concurrency, the libuv pool
// (UV_THREADPOOL_SIZE, set by bench/servers.py) one thread per core as tofu's render slots.
// Settings chosen to match tofu's output (bench/README.md): EXIF orientation applied, never
// enlarged, Lanczos-3 with shrink-on-load (sharp's defaults), metadata stripped (default),
// baseline JPEG with optimised Huffman tables, 4:2:0, mozjpeg's trellis/scan options off
// (defaults), progressive from PROGRESSIVE_MIN_PIXELS output pixels as tofu.
//
//   node bench/sharp_server.js --root DIR --port N --workers N --progressive-min-pixels N
'use strict';

const cluster = require('node:cluster');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { values: args } = parseArgs({
  options: {
    root: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '8091' },
    workers: { type: 'string', default: String(require('node:os').availableParallelism()) },
    'progressive-min-pixels': { type: 'string', default: '1000000' },
  },
});

if (cluster.isPrimary) {
  const workers = Number(args.workers);
  for (let i = 0; i < workers; i++) cluster.fork();
  let stopping = false;
  cluster.on('exit', (worker, code) => {
    if (!stopping) {
      console.error(`worker ${worker.process.pid} exited with ${code}`);
      process.exitCode = 1;
    }
  });
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      stopping = true;
      for (const worker of Object.values(cluster.workers)) worker.kill();
    });
  }
} else {
  const sharp = require('sharp');
  sharp.cache(false); // no operation cache: every request renders, as in tofu's miss path
  sharp.concurrency(1);
  const root = fs.realpathSync(args.root);
  const progressiveMin = Number(args['progressive-min-pixels']);
  const route = /^\/(\d+)\/(\d+)\/([01])\/(\d+)\/(.+)$/;

  const render = async (file, width, height, crop, quality) => {
    const options = { withoutEnlargement: true, fit: crop ? 'cover' : 'inside' };
    if (width) options.width = width;
    if (height) options.height = height;
    // Only outputs that can reach the progressive threshold need the header read first.
    let progressive = false;
    if ((width || 1e9) * (height || 1e9) >= progressiveMin) {
      const meta = await sharp(file).metadata();
      const [w, h] = (meta.orientation || 1) >= 5 ? [meta.height, meta.width] : [meta.width, meta.height];
      const scale = crop
        ? Math.min(1, Math.max(width / w, height / h))
        : Math.min(1, width ? width / w : 1, height ? height / h : 1);
      const outW = crop ? Math.min(width, Math.round(w * scale)) : Math.round(w * scale);
      const outH = crop ? Math.min(height, Math.round(h * scale)) : Math.round(h * scale);
      progressive = outW * outH >= progressiveMin;
    }
    return sharp(file)
      .autoOrient()
      .resize(options)
      .jpeg({ quality, progressive, optimiseCoding: true, chromaSubsampling: '4:2:0', mozjpeg: false })
      .toBuffer();
  };

  http
    .createServer((req, res) => {
      if (req.url === '/healthz') {
        res.end('ok\n');
        return;
      }
      const m = route.exec(req.url);
      if (!m) {
        res.writeHead(404).end('not found\n');
        return;
      }
      const file = path.join(root, decodeURIComponent(m[5]));
      render(file, Number(m[1]), Number(m[2]), m[3] === '1', Number(m[4])).then(
        (body) => {
          res.writeHead(200, { 'Content-Type': 'image/jpeg', 'Content-Length': body.length });
          res.end(body);
        },
        (err) => {
          // A missing original is a 404, as in tofu; asked only once rendering has failed.
          fs.promises.access(file).then(
            () => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${err.message}\n`),
            () => res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n'),
          );
        },
      );
    })
    .listen(Number(args.port), args.host);
}
