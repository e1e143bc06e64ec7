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
// Q 0: the format's default quality. With --negotiate (W5), the output format follows the Accept
// header as tofu's does: AVIF if the client names image/avif, else WebP if it names image/webp,
// else JPEG; --avif-quality/--avif-effort/--avif-chroma and --webp-quality/--webp-effort set
// the encoders (unset: sharp's own defaults: AVIF quality 50, effort 4, 4:4:4; WebP quality
// 80, effort 4).
//
//   node bench/sharp_server.js --root DIR --port N --workers N --progressive-min-pixels N
//        [--negotiate] [--avif-quality Q] [--avif-effort E] [--avif-chroma 4:2:0|4:4:4]
//        [--webp-quality Q] [--webp-effort E] [--jpeg-quality Q]
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
    negotiate: { type: 'boolean', default: false },
    'avif-quality': { type: 'string' },
    'avif-effort': { type: 'string' },
    'avif-chroma': { type: 'string' },
    'webp-quality': { type: 'string' },
    'webp-effort': { type: 'string' },
    'jpeg-quality': { type: 'string', default: '80' },
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

  // Only the options given: the rest are sharp's defaults.
  const given = (pairs) =>
    Object.fromEntries(
      pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [k, /^\d+$/.test(v) ? Number(v) : v]),
    );
  const avifOptions = given([
    ['quality', args['avif-quality']],
    ['effort', args['avif-effort']],
    ['chromaSubsampling', args['avif-chroma']],
  ]);
  const webpOptions = given([
    ['quality', args['webp-quality']],
    ['effort', args['webp-effort']],
  ]);
  const chooseFormat = (accept) => {
    if (!args.negotiate || !accept) return 'jpeg';
    if (accept.includes('image/avif')) return 'avif';
    if (accept.includes('image/webp')) return 'webp';
    return 'jpeg';
  };

  const encode = (pipeline, format, quality, progressive) => {
    if (format === 'avif') return pipeline.avif(quality ? { ...avifOptions, quality } : avifOptions);
    if (format === 'webp') return pipeline.webp(quality ? { ...webpOptions, quality } : webpOptions);
    return pipeline.jpeg({
      quality: quality || Number(args['jpeg-quality']),
      progressive,
      optimiseCoding: true,
      chromaSubsampling: '4:2:0',
      mozjpeg: false,
    });
  };

  const render = async (file, width, height, crop, quality, format) => {
    const options = { withoutEnlargement: true, fit: crop ? 'cover' : 'inside' };
    if (width) options.width = width;
    if (height) options.height = height;
    // Only outputs that can reach the progressive threshold need the header read first.
    let progressive = false;
    if (format === 'jpeg' && (width || 1e9) * (height || 1e9) >= progressiveMin) {
      const meta = await sharp(file).metadata();
      const [w, h] = (meta.orientation || 1) >= 5 ? [meta.height, meta.width] : [meta.width, meta.height];
      const scale = crop
        ? Math.min(1, Math.max(width / w, height / h))
        : Math.min(1, width ? width / w : 1, height ? height / h : 1);
      const outW = crop ? Math.min(width, Math.round(w * scale)) : Math.round(w * scale);
      const outH = crop ? Math.min(height, Math.round(h * scale)) : Math.round(h * scale);
      progressive = outW * outH >= progressiveMin;
    }
    return encode(sharp(file).autoOrient().resize(options), format, quality, progressive).toBuffer();
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
      const format = chooseFormat(req.headers.accept);
      render(file, Number(m[1]), Number(m[2]), m[3] === '1', Number(m[4]), format).then(
        (body) => {
          const headers = { 'Content-Type': `image/${format}`, 'Content-Length': body.length };
          if (args.negotiate) headers.Vary = 'Accept';
          res.writeHead(200, headers);
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
